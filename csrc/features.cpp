// The features kernel (features.hpp): one pass per symbol, the day statistics first,
// then the windowed formulas over the symbol's minutes in cache-resident scratch space,
// each minute's 59 values written straight into its (symbol, minute, :) row.
#include "features.hpp"

#include <dlfcn.h>
#include <immintrin.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <system_error>
#include <thread>
#include <type_traits>
#include <vector>

namespace tthf::features {

const char* const kColumnNames[N_COLUMNS] = {"bid",  "ask", "bid_size", "ask_size", "high",
                                             "low",  "close", "vwap", "volume", "trade_count"};

const char* const kFeatureNames[kNumFeatures] = {
    "ret_1", "ret_5", "ret_15", "ret_30", "ret_open", "mid_vs_ma5", "mid_vs_ma15", "mid_vs_ma30",
    "dist_high_30", "dist_low_30", "microprice_dev", "trade_vs_mid", "mid_vs_vwap",
    "log_volume", "volume_rel_5", "volume_rel_15", "volume_rel_30", "log_trade_count",
    "log_dollar_volume", "log_cum_volume", "volume_share", "no_trade", "minutes_since_trade",
    "signed_flow_15",
    "rv_5", "rv_10", "rv_15", "rv_30", "rv_day", "parkinson_15", "range_30", "vol_of_vol_30",
    "vol_ratio_5_30", "abs_ret_1",
    "spread_bps", "spread_vs_ma30", "log_bid_size", "log_ask_size", "log_depth", "imbalance",
    "imbalance_ma5", "imbalance_ma15", "imbalance_ma30", "imbalance_chg", "ofi_5", "bid_move",
    "ask_move", "quote_age",
    "rsi_14", "macd", "macd_signal", "macd_hist", "bb_pctb_20", "bb_width_20", "stoch_k_14",
    "zscore_30", "tod_frac", "tod_sin", "tod_cos"};

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kVolEps = 1e-6;       // added to both realized vols in vol_ratio_5_30
constexpr double kRelStdFloor = 1e-9;  // a std below this fraction of the level is rounding noise
constexpr double kPi = 3.141592653589793;

// The EMAs' smoothing factors: ema12, ema26, RSI's gain/loss (Wilder, 1/14), the MACD signal.
enum Ema : int { EMA12, EMA26, WILDER, SIGNAL, N_EMAS };
const double kAlpha[N_EMAS] = {2.0 / 13.0, 2.0 / 27.0, 1.0 / 14.0, 2.0 / 10.0};

double sign(double x) { return x > 0 ? 1.0 : (x < 0 ? -1.0 : (x == 0 ? 0.0 : x)); }
double maximum(double x, double y) { return (x >= y || std::isnan(x)) ? x : y; }  // NaN propagates
double minimum(double x, double y) { return (x <= y || std::isnan(x)) ? x : y; }
double fmax_(double x, double y) { return std::isnan(y) ? x : (std::isnan(x) || y > x ? y : x); }  // NaN ignored
double fmin_(double x, double y) { return std::isnan(y) ? x : (std::isnan(x) || y < x ? y : x); }

// Logs of whole arrays, four at a time through glibc's vector math library (libmvec: AVX2
// log and log1p, a few ulps like the scalar ones) when this CPU has AVX2 and the library
// is there, else the scalar libm calls. Every element of every array goes through the same
// function (a short tail is padded to four), so a value's bits depend only on its input,
// never on where the computed range starts: real time and batch stay identical. The choice
// is made once per process; TTHF_SCALAR_MATH=1 forces the scalar calls (the tests compare both).
using Unary = double (*)(double);
struct VectorMath {
    void* log = nullptr;    // __m256d (*)(__m256d)
    void* log1p = nullptr;
};

const VectorMath& vector_math_fns() {
    static const VectorMath math = [] {
        VectorMath m;
        const char* scalar = std::getenv("TTHF_SCALAR_MATH");
        if ((scalar && scalar[0] == '1') || !__builtin_cpu_supports("avx2")) return m;
        void* lib = dlopen("libmvec.so.1", RTLD_NOW | RTLD_LOCAL);
        if (!lib) return m;
        m.log = dlsym(lib, "_ZGVdN4v_log");
        m.log1p = dlsym(lib, "_ZGVdN4v_log1p");
        return m;
    }();
    return math;
}

__attribute__((target("avx2"))) void apply4(void* fn, double* v, std::int64_t n) {
    const auto f = reinterpret_cast<__m256d (*)(__m256d)>(fn);
    std::int64_t i = 0;
    for (; i + 4 <= n; i += 4) _mm256_storeu_pd(v + i, f(_mm256_loadu_pd(v + i)));
    if (i < n) {
        double tail[4] = {1, 1, 1, 1};
        for (std::int64_t k = i; k < n; ++k) tail[k - i] = v[k];
        _mm256_storeu_pd(tail, f(_mm256_loadu_pd(tail)));
        for (std::int64_t k = i; k < n; ++k) v[k] = tail[k - i];
    }
}

void apply(void* vector, Unary scalar, double* v, std::int64_t n) {
    if (vector) {
        apply4(vector, v, n);
    } else {
        for (std::int64_t i = 0; i < n; ++i) v[i] = scalar(v[i]);
    }
}
double scalar_log(double x) { return std::log(x); }
double scalar_log1p(double x) { return std::log1p(x); }
void logs(double* v, std::int64_t n) { apply(vector_math_fns().log, scalar_log, v, n); }
void log1ps(double* v, std::int64_t n) { apply(vector_math_fns().log1p, scalar_log1p, v, n); }

// q**t and q**-t of each EMA for the minutes 0..W-1: the closed form's weights, per minute
// rather than per cell (pow is the costliest call here).
struct Powers {
    std::vector<double> pos[N_EMAS], neg[N_EMAS];
    explicit Powers(std::int64_t W) {
        for (int e = 0; e < N_EMAS; ++e) {
            const double q = 1.0 - kAlpha[e];
            pos[e].resize(static_cast<std::size_t>(W));
            neg[e].resize(static_cast<std::size_t>(W));
            for (std::int64_t t = 0; t < W; ++t) {
                const double tf = static_cast<double>(t);
                pos[e][t] = std::pow(q, tf);
                neg[e][t] = std::pow(q, -tf);
            }
        }
    }
};

// One running sum down the day: carry + x, or x itself at the open (a fresh cumsum).
struct Running {
    double total;
    bool started;
    double add(double x) {
        total = started ? total + x : x;
        started = true;
        return total;
    }
};

// The recursive EMA y_t = (1 - a) y_{t-1} + a x_t seeded with the first value, in closed
// form y_t = q^t sum_j w_j x_j (w = q^-j, a q^-j after the first): one resumable sum.
struct EmaStep {
    Running sum;
    double prev_x;  // x at the minute before (NaN: none)
    double step(double x, std::int64_t t, int e, const Powers& p) {
        const bool valid = !std::isnan(x);
        const bool first = valid && std::isnan(prev_x);
        const double weight = (first ? 1.0 : kAlpha[e]) * p.neg[e][t];
        const double total = sum.add(valid ? x * weight : 0.0);
        return valid ? total * p.pos[e][t] : kNaN;
    }
};

// The grid's columns for a block of symbols, copied symbol-major from minute r0 on: the
// per-symbol passes then read memory in order (the (minutes, symbols) grid read one symbol
// at a time costs a TLB miss per value). Earlier minutes (a stale quote's) come from the grid.
class Tile {
  public:
    static constexpr std::int64_t kSymbols = 64;
    static constexpr std::int64_t kAhead = 8;  // rows prefetched ahead

    explicit Tile(const Grid& g) : g_(g), W(g.W), S(g.S) {}
    void load(std::int64_t a, std::int64_t b, std::int64_t r0) {
        a_ = a, nb_ = b - a, r0_ = r0, rows_ = W - r0;
        data_.resize(static_cast<std::size_t>(N_COLUMNS * nb_ * rows_));
        for (int c = 0; c < N_COLUMNS; ++c) {
            double* dst = data_.data() + c * nb_ * rows_;
            for (std::int64_t t = r0; t < W; ++t) {
                const double* row = g_.col[c] + t * S + a;
                // Rows are pages apart, which the hardware prefetcher does not follow.
                if (t + kAhead < W) {
                    for (std::int64_t k = 0; k < nb_; k += 8) __builtin_prefetch(row + kAhead * S + k);
                }
                for (std::int64_t k = 0; k < nb_; ++k) dst[k * rows_ + (t - r0)] = row[k];
            }
        }
    }
    double at(Column c, std::int64_t t, std::int64_t s) const {
        return t >= r0_ ? data_[static_cast<std::size_t>((c * nb_ + (s - a_)) * rows_ + (t - r0_))]
                        : g_.col[c][t * S + s];
    }

  private:
    const Grid& g_;
    std::vector<double> data_;
    std::int64_t a_ = 0, nb_ = 0, r0_ = 0, rows_ = 0;

  public:
    const std::int64_t W, S;
};

// The day statistics of symbol s for minutes c..W-1, resumed from minute c-1.
void advance(const Tile& g, const State& st, const Powers& p, std::int64_t s, std::int64_t c) {
    std::int32_t* I = st.ints + s * st.N * N_INT_FIELDS;
    double* F = st.floats + s * st.N * N_FLOAT_FIELDS;
    std::int32_t lq = -1, lt = -1, lpx = -1, fq = -1;
    double prev_lm = kNaN;
    bool carry = c > 0;
    Running cum_pv{0, carry}, cum_vpx{0, carry}, cum_vol{0, carry}, sum_r2{0, carry}, n_r2{0, carry};
    EmaStep e12{{0, carry}, kNaN}, e26{{0, carry}, kNaN}, gain{{0, carry}, kNaN}, loss{{0, carry}, kNaN},
        signal{{0, carry}, kNaN};
    if (carry) {
        const std::int32_t* pi = I + (c - 1) * N_INT_FIELDS;
        const double* pf = F + (c - 1) * N_FLOAT_FIELDS;
        lq = pi[LAST_QUOTE], lt = pi[LAST_TRADE], lpx = pi[LAST_PX_AT], fq = pi[FIRST_QUOTE];
        prev_lm = pf[LOG_MID];
        cum_pv.total = pf[CUM_PV], cum_vpx.total = pf[CUM_VPX], cum_vol.total = pf[CUM_VOL];
        sum_r2.total = pf[SUM_R2], n_r2.total = pf[N_R2];
        e12.sum.total = pf[S_EMA12], e26.sum.total = pf[S_EMA26], gain.sum.total = pf[S_GAIN];
        loss.sum.total = pf[S_LOSS], signal.sum.total = pf[S_SIGNAL];
        e12.prev_x = e26.prev_x = pf[MID];
        gain.prev_x = loss.prev_x = pf[RET];
        signal.prev_x = pf[MACD];
    }
    for (std::int64_t t = c; t < g.W; ++t) {
        const auto tt = static_cast<std::int32_t>(t);
        const double volume = g.at(VOLUME, t, s), close = g.at(CLOSE, t, s), vwap = g.at(VWAP, t, s);
        const bool traded = volume > 0;
        if (!std::isnan(g.at(BID, t, s))) {
            lq = tt;
            if (fq < 0) fq = tt;
        }
        if (traded) lt = tt;
        if (traded && !std::isnan(close)) lpx = tt;
        const double mid = lq >= 0 ? (g.at(BID, lq, s) + g.at(ASK, lq, s)) / 2 : kNaN;
        const double lm = std::log(mid);
        const double r = lm - prev_lm;
        const double px = !std::isnan(vwap) ? vwap : (!std::isnan(close) ? close : mid);
        const bool px_ok = traded && !std::isnan(px);
        const double r2 = r * r;
        double* f = F + t * N_FLOAT_FIELDS;
        f[CUM_PV] = cum_pv.add(px_ok ? px * volume : 0.0);
        f[CUM_VPX] = cum_vpx.add(px_ok ? volume : 0.0);
        f[CUM_VOL] = cum_vol.add(volume);
        f[SUM_R2] = sum_r2.add(std::isnan(r2) ? 0.0 : r2);
        f[N_R2] = n_r2.add(std::isnan(r2) ? 0.0 : 1.0);
        const double ema12 = e12.step(mid, t, EMA12, p), ema26 = e26.step(mid, t, EMA26, p);
        const double macd = std::log(ema12 / ema26) * 1e4;
        f[GAIN] = gain.step(maximum(r, 0.0), t, WILDER, p);
        f[LOSS] = loss.step(maximum(-r, 0.0), t, WILDER, p);
        f[MACD_SIGNAL] = signal.step(macd, t, SIGNAL, p);
        f[S_EMA12] = e12.sum.total, f[S_EMA26] = e26.sum.total, f[S_GAIN] = gain.sum.total;
        f[S_LOSS] = loss.sum.total, f[S_SIGNAL] = signal.sum.total;
        f[MID] = mid, f[LOG_MID] = lm, f[RET] = r, f[MACD] = macd;
        e12.prev_x = e26.prev_x = mid;
        gain.prev_x = loss.prev_x = r;
        signal.prev_x = macd;
        prev_lm = lm;
        std::int32_t* i = I + t * N_INT_FIELDS;
        i[LAST_QUOTE] = lq, i[LAST_TRADE] = lt, i[LAST_PX_AT] = lpx, i[FIRST_QUOTE] = fq;
    }
}

using Vec = std::vector<double>;

// Trailing k-minute sums (k <= 31) of the available values of one series over the local
// range, as sums of power-of-two blocks: level j at i sums minutes i-2^j+1..i (clipped at
// the range's start), and a window adds its blocks from the largest, so a window's bits
// depend only on the values in it (numpy's oracle does the same adds in the same order).
// Counts are exact integers, so they come from a running count.
class Rolling {
  public:
    static constexpr int kLevels = 5;

    // The series x[0..n) (NaN: missing); top: the largest block level a window will use.
    void build(const double* x, std::int64_t n, int top) {
        n_ = n;
        top_ = top;
        for (int j = 0; j <= top; ++j) level_[j].resize(static_cast<std::size_t>(n));
        avail_.resize(static_cast<std::size_t>(n));
        prefix_.resize(static_cast<std::size_t>(n + 1));
        prefix_[0] = 0;
        double* l0 = level_[0].data();
        double* av = avail_.data();
        for (std::int64_t i = 0; i < n; ++i) {
            const bool valid = !std::isnan(x[i]);
            l0[i] = valid ? x[i] : 0.0;
            av[i] = valid ? 1.0 : 0.0;
        }
        double running = 0;  // an exact integer: the adds are exact in any order
        for (std::int64_t i = 0; i < n; ++i) prefix_[i + 1] = running += av[i];
        for (int j = 1; j <= top; ++j) {
            const std::int64_t span = std::min(n, std::int64_t{1} << (j - 1));
            const double* prev = level_[j - 1].data();
            double* cur = level_[j].data();
            for (std::int64_t i = 0; i < span; ++i) cur[i] = prev[i];
            for (std::int64_t i = span; i < n; ++i) cur[i] = prev[i] + prev[i - span];
        }
    }
    void sum(int k, double* out) const {
        std::int64_t done = 0;
        for (int bit = top_; bit >= 0; --bit) {
            if (!(k & (1 << bit))) continue;
            const double* lv = level_[bit].data();
            if (done == 0) {
                for (std::int64_t i = 0; i < n_; ++i) out[i] = lv[i];
            } else {
                for (std::int64_t i = done; i < n_; ++i) out[i] += lv[i - done];
            }
            done += std::int64_t{1} << bit;
        }
    }
    void count(int k, double* out) const {
        const double* p = prefix_.data();
        const std::int64_t head = std::min<std::int64_t>(k - 1, n_);
        for (std::int64_t i = 0; i < head; ++i) out[i] = p[i + 1];
        for (std::int64_t i = head; i < n_; ++i) out[i] = p[i + 1] - p[i - k + 1];
    }
    // The trailing mean (NaN without a value) into out, the count into cnt.
    void mean(int k, double* out, double* cnt) const {
        sum(k, out);
        count(k, cnt);
        for (std::int64_t i = 0; i < n_; ++i) out[i] = cnt[i] > 0 ? out[i] / std::max(cnt[i], 1.0) : kNaN;
    }
    // Sample std (ddof 1, at least two values) from the window's mean and count: two-pass,
    // the deviations summed newest first, so a constant window is (almost exactly) zero.
    void std_(int k, const double* mean, const double* cnt, double* out) const {
        const double* x = level_[0].data();
        const double* a = avail_.data();
        for (std::int64_t i = 0; i < n_; ++i) out[i] = 0.0;
        for (std::int64_t j = 0; j < std::min<std::int64_t>(k, n_); ++j) {
            for (std::int64_t i = j; i < n_; ++i) {
                double d = (x[i - j] - mean[i]) * a[i - j];
                d *= d;
                out[i] += d;
            }
        }
        for (std::int64_t i = 0; i < n_; ++i) out[i] = cnt[i] >= 2 ? std::sqrt(out[i] / std::max(cnt[i] - 1, 1.0)) : kNaN;
    }

  private:
    std::array<Vec, kLevels> level_;
    Vec avail_, prefix_;
    std::int64_t n_ = 0;
    int top_ = 0;
};

// Trailing max and min ignoring NaN (exact, so any order gives the same bits): blocks of
// 2^j minutes by doubling, a 14- or 30-minute window as two overlapping 8- or 16-blocks.
class Extremes {
  public:
    void build(const Vec& x) {
        const auto n = static_cast<std::int64_t>(x.size());
        hi_[0] = x, lo_[0] = x;
        for (int j = 1; j < 5; ++j) {
            const std::int64_t span = std::int64_t{1} << (j - 1);
            hi_[j].resize(static_cast<std::size_t>(n));
            lo_[j].resize(static_cast<std::size_t>(n));
            for (std::int64_t i = 0; i < n; ++i) {
                hi_[j][i] = i >= span ? fmax_(hi_[j - 1][i], hi_[j - 1][i - span]) : hi_[j - 1][i];
                lo_[j][i] = i >= span ? fmin_(lo_[j - 1][i], lo_[j - 1][i - span]) : lo_[j - 1][i];
            }
        }
    }
    void hi(int k, double* out) const { pair(hi_, k, fmax_, out); }
    void lo(int k, double* out) const { pair(lo_, k, fmin_, out); }

  private:
    template <class Fn>
    static void pair(const std::array<Vec, 5>& lv, int k, Fn fn, double* out) {
        const int j = k > 16 ? 4 : 3;
        const std::int64_t back = k - (std::int64_t{1} << j);
        const auto n = static_cast<std::int64_t>(lv[j].size());
        for (std::int64_t i = 0; i < n; ++i) out[i] = i >= back ? fn(lv[j][i], lv[j][i - back]) : lv[j][i];
    }
    std::array<Vec, 5> hi_, lo_;
};

// Per-minute values shared by every symbol: the time-of-day features.
struct Clock {
    Vec phase, sin, cos;
    Clock(std::int64_t W, std::int64_t n_minutes) : phase(W), sin(W), cos(W) {
        for (std::int64_t t = 0; t < W; ++t) {
            phase[t] = static_cast<double>(t) / static_cast<double>(n_minutes);
            sin[t] = std::sin(2 * kPi * phase[t]);
            cos[t] = std::cos(2 * kPi * phase[t]);
        }
    }
};

// The symbol's local series (index i = minute lo + i) and the windows over them.
enum Series : int {
    T, BID_, ASK_, BS, AS, PBID, PASK, PBS, PAS, MID_, LM, R, R2, VOL, LVOL, CLOSE_, PX, DEPTH, IMB, SPREAD, HL,
    SIGNED, OFI, RV5, LM_OPEN, LAST_PX, AGE, SINCE_TRADE,
    // windows
    MA5, MA15, MA20, MA30, SD20, SD30, VMA5, VMA15, VMA30, R2M5, R2M10, R2M15, R2M30, HLM15, SFM15, SPM30, IMA5,
    IMA15, IMA30, OFIS5, DMA5, SD_RV5, HI30, LO30, HI14, LO14, CNT, TMP, SGN, LOGV, N_SERIES
};

struct Scratch {
    std::array<Vec, N_SERIES> v;
    Rolling w_mid, w_vol, w_r2, w_hl, w_signed, w_spread, w_imb, w_ofi, w_depth, w_rv5;
    Extremes ext;
    std::vector<float> block;  // the Writer's feature-major columns
    void resize(std::int64_t n) {
        for (auto& x : v) x.resize(static_cast<std::size_t>(n));
    }
    double* operator[](Series s) { return v[s].data(); }
};

// Writes one feature's column of the symbol's block after the missing-value policy: the
// float32 value, or the feature's neutral value where that is not finite (overflow to
// float32 infinity included). Columns go to a feature-major scratch block first (each a
// contiguous run the compiler vectorizes), and `flush` transposes the block into the
// symbol's (minutes, features) rows of the output.
struct Writer {
    float* out;  // the symbol's row of minute `start`
    const double* neutral;
    std::int64_t skip, n;  // local index of minute `start`, local length
    std::vector<float>& block;  // (kNumFeatures, n - skip)
    int f = 0;
    template <class Fn>
    void put(Fn value) {
        // Doubles from here on round to float32 infinity (the tie goes to the even infinity).
        const double overflow = double(std::numeric_limits<float>::max()) + std::ldexp(1.0, 103);
        const auto fallback = static_cast<float>(neutral[f]);
        const std::int64_t m = n - skip;
        if (f == 0) block.resize(static_cast<std::size_t>(kNumFeatures * m));
        float* o = block.data() + f * m - skip;
        for (std::int64_t i = skip; i < n; ++i) {
            const double x = value(i);
            o[i] = std::fabs(x) < overflow ? static_cast<float>(x) : fallback;
        }
        ++f;
    }
    // The block's columns into the symbol's output rows, scaled (or not) as `scale` says:
    // row by row, so the writes are contiguous and the reads (one value of each column) come
    // from the same cache lines for 16 rows in a row.
    void flush(const Scale& scale) const {
        const std::int64_t m = n - skip;
        const float* b = block.data();
        const int width = scale.n_out;
        if (!scale.index) {
            for (std::int64_t i = 0; i < m; ++i) {
                float* row = out + i * width;
                for (int j = 0; j < width; ++j) row[j] = b[j * m + i];
            }
            return;
        }
        const float hi = scale.clip, lo = -scale.clip;
        for (std::int64_t i = 0; i < m; ++i) {
            float* row = out + i * width;
            for (int j = 0; j < width; ++j) {
                const float v = (b[scale.index[j] * m + i] - scale.mean[j]) * scale.inv_std[j];
                row[j] = v < lo ? lo : (v > hi ? hi : v);
            }
        }
    }
};

// The local series of symbol s: the forward-filled quote, the state's values, the windows' inputs.
void local_series(const Tile& g, const State& st, std::int64_t s, std::int64_t lo, Scratch& x) {
    const std::int64_t n = g.W - lo;
    const std::int32_t* I = st.ints + s * st.N * N_INT_FIELDS;
    const double* F = st.floats + s * st.N * N_FLOAT_FIELDS;
    for (std::int64_t i = 0; i < n; ++i) {
        const std::int64_t t = lo + i;
        const std::int32_t* iv = I + t * N_INT_FIELDS;
        const double* f = F + t * N_FLOAT_FIELDS;
        const std::int32_t lq = iv[LAST_QUOTE], fq = iv[FIRST_QUOTE], lpx = iv[LAST_PX_AT], lt = iv[LAST_TRADE];
        const double tf = static_cast<double>(t);
        const double bid = lq >= 0 ? g.at(BID, lq, s) : kNaN, ask = lq >= 0 ? g.at(ASK, lq, s) : kNaN;
        const double bs = lq >= 0 ? g.at(BID_SIZE, lq, s) : kNaN, as = lq >= 0 ? g.at(ASK_SIZE, lq, s) : kNaN;
        const double pbid = i ? x[BID_][i - 1] : kNaN, pask = i ? x[ASK_][i - 1] : kNaN;
        const double pbs = i ? x[BS][i - 1] : kNaN, pas = i ? x[AS][i - 1] : kNaN;
        const double mid = f[MID], r = f[RET], volume = g.at(VOLUME, t, s), close = g.at(CLOSE, t, s);
        const double vwap = g.at(VWAP, t, s), depth = bs + as;
        const double pmid = i ? x[MID_][i - 1] : kNaN;
        x[T][i] = tf, x[BID_][i] = bid, x[ASK_][i] = ask, x[BS][i] = bs, x[AS][i] = as;
        x[PBID][i] = pbid, x[PASK][i] = pask, x[PBS][i] = pbs, x[PAS][i] = pas;
        x[MID_][i] = mid, x[LM][i] = f[LOG_MID], x[R][i] = r, x[R2][i] = r * r;
        x[VOL][i] = volume, x[LVOL][i] = volume, x[CLOSE_][i] = close, x[DEPTH][i] = depth;
        x[SGN][i] = sign(close - pmid);
        x[HL][i] = g.at(HIGH, t, s) / g.at(LOW, t, s);
        x[PX][i] = !std::isnan(vwap) ? vwap : (!std::isnan(close) ? close : mid);
        x[IMB][i] = depth == 0 ? 0.0 : (bs - as) / depth;
        x[SPREAD][i] = (ask - bid) / mid * 1e4;
        x[OFI][i] = (bid >= pbid ? bs : 0.0) - (bid <= pbid ? pbs : 0.0) - (ask <= pask ? as : 0.0) +
                    (ask >= pask ? pas : 0.0);  // NaN comparisons are false: nothing added
        x[LM_OPEN][i] = fq >= 0 ? F[fq * N_FLOAT_FIELDS + LOG_MID] : kNaN;
        x[LAST_PX][i] = lpx >= 0 ? g.at(CLOSE, lpx, s) : kNaN;
        x[AGE][i] = lq >= 0 ? tf - lq : kNaN;
        x[SINCE_TRADE][i] = lt >= 0 ? tf - lt : kNaN;
    }
    log1ps(x[LVOL], n);
    logs(x[HL], n);
    for (std::int64_t i = 0; i < n; ++i) {
        const double hl = x[HL][i], sgn = x[SGN][i];
        x[HL][i] = hl * hl / (4 * std::log(2.0));
        x[SIGNED][i] = (std::isnan(sgn) ? 0.0 : sgn) * x[LVOL][i];
    }
}

// The windows of symbol s's local series.
void local_windows(std::int64_t n, Scratch& x) {
    x.w_mid.build(x[MID_], n, 4);
    x.w_vol.build(x[VOL], n, 4);
    x.w_r2.build(x[R2], n, 4);
    x.w_hl.build(x[HL], n, 3);
    x.w_signed.build(x[SIGNED], n, 3);
    x.w_spread.build(x[SPREAD], n, 4);
    x.w_imb.build(x[IMB], n, 4);
    x.w_ofi.build(x[OFI], n, 2);
    x.w_depth.build(x[DEPTH], n, 2);
    const std::pair<Series, int> mid_means[] = {{MA5, 5}, {MA15, 15}, {MA20, 20}, {MA30, 30}};
    for (auto [out, k] : mid_means) x.w_mid.mean(k, x[out], x[CNT]);
    x.w_mid.count(20, x[CNT]);
    x.w_mid.std_(20, x[MA20], x[CNT], x[SD20]);
    x.w_mid.count(30, x[CNT]);
    x.w_mid.std_(30, x[MA30], x[CNT], x[SD30]);
    for (auto [out, k] : {std::pair{VMA5, 5}, {VMA15, 15}, {VMA30, 30}}) x.w_vol.mean(k, x[out], x[CNT]);
    for (auto [out, k] : {std::pair{R2M5, 5}, {R2M10, 10}, {R2M15, 15}, {R2M30, 30}}) x.w_r2.mean(k, x[out], x[CNT]);
    x.w_hl.mean(15, x[HLM15], x[CNT]);
    x.w_signed.mean(15, x[SFM15], x[CNT]);
    x.w_spread.mean(30, x[SPM30], x[CNT]);
    for (auto [out, k] : {std::pair{IMA5, 5}, {IMA15, 15}, {IMA30, 30}}) x.w_imb.mean(k, x[out], x[CNT]);
    x.w_ofi.sum(5, x[OFIS5]);
    x.w_depth.mean(5, x[DMA5], x[CNT]);
    for (std::int64_t i = 0; i < n; ++i) x[RV5][i] = std::sqrt(x[R2M5][i]);
    x.w_rv5.build(x[RV5], n, 4);
    x.w_rv5.mean(30, x[TMP], x[CNT]);
    x.w_rv5.std_(30, x[TMP], x[CNT], x[SD_RV5]);
    x.ext.build(x.v[MID_]);
    x.ext.hi(30, x[HI30]);
    x.ext.lo(30, x[LO30]);
    x.ext.hi(14, x[HI14]);
    x.ext.lo(14, x[LO14]);
}

// The features of symbol s for minutes start..W-1, computed over the local range lo..W-1.
void symbol_features(const Tile& g, const State& st, const Request& req, const Clock& clock, std::int64_t s,
                     std::int64_t lo, Scratch& x) {
    const std::int64_t n = g.W - lo;
    x.resize(n);
    local_series(g, st, s, lo, x);
    local_windows(n, x);
    const double* F = st.floats + (s * st.N + lo) * N_FLOAT_FIELDS;  // the state at local index 0
    auto state = [F](FloatField k) { return [F, k](std::int64_t i) { return F[i * N_FLOAT_FIELDS + k]; }; };
    auto lag = [](const double* v, std::int64_t k, std::int64_t i) { return i >= k ? v[i - k] : kNaN; };
    const double *lm = x[LM], *mid = x[MID_], *r = x[R], *lvol = x[LVOL], *vol = x[VOL];
    const double *bid = x[BID_], *ask = x[ASK_], *bs = x[BS], *as = x[AS], *depth = x[DEPTH];
    const double *imb = x[IMB], *spread = x[SPREAD], *rv5 = x[RV5], *hi30 = x[HI30], *lo30 = x[LO30];
    Writer w{req.out + s * (g.W - req.start) * req.scale.n_out, req.neutral, req.start - lo, n, x.block};
    const auto cum_pv = state(CUM_PV), cum_vpx = state(CUM_VPX), cum_vol = state(CUM_VOL);
    // log (log1p) of a series or of a per-minute value over the minutes written, in LOGV;
    // read back through the returned view before the next call overwrites it.
    const std::int64_t skip = req.start - lo;
    auto fill = [&](auto value) {
        double* v = x[LOGV];
        if constexpr (std::is_pointer_v<decltype(value)>) {
            for (std::int64_t i = skip; i < n; ++i) v[i] = value[i];
        } else {
            for (std::int64_t i = skip; i < n; ++i) v[i] = value(i);
        }
        return v;
    };
    auto view = [](const double* v) { return [v](std::int64_t i) { return v[i]; }; };
    auto mapped = [&](void (*fn)(double*, std::int64_t), auto value) {
        double* v = fill(value);
        fn(v + skip, n - skip);
        return static_cast<const double*>(v);
    };
    auto log_of = [&](auto value) { return mapped(logs, value); };
    auto log1p_of = [&](auto value) { return mapped(log1ps, value); };
    const auto sum_r2 = state(SUM_R2), n_r2 = state(N_R2), gain = state(GAIN), loss = state(LOSS);
    const auto macd = state(MACD), signal = state(MACD_SIGNAL);
    // price
    w.put([&](auto i) { return r[i]; });
    for (int k : {5, 15, 30}) w.put([&](auto i) { return lm[i] - lag(lm, k, i); });
    w.put([&](auto i) { return lm[i] - x[LM_OPEN][i]; });
    for (Series ma : {MA5, MA15, MA30}) {
        const double* v = log_of(x[ma]);
        w.put([&](auto i) { return lm[i] - v[i]; });
    }
    for (const double* level : {hi30, lo30}) {
        const double* v = log_of(level);
        w.put([&](auto i) { return lm[i] - v[i]; });
    }
    w.put([&](auto i) { return ((bid[i] * as[i] + ask[i] * bs[i]) / depth[i] / mid[i] - 1) * 1e4; });
    w.put([&, v = log_of([&](auto i) { return x[LAST_PX][i] / mid[i]; })](auto i) { return v[i] * 1e4; });
    w.put([&, v = log_of([&](auto i) { return mid[i] / (cum_pv(i) / cum_vpx(i)); })](auto i) { return v[i] * 1e4; });
    // volume
    w.put([&](auto i) { return lvol[i]; });
    for (Series ma : {VMA5, VMA15, VMA30}) {
        const double* v = log1p_of(x[ma]);
        w.put([&](auto i) { return lvol[i] - v[i]; });
    }
    w.put(view(log1p_of([&](auto i) { return g.at(TRADE_COUNT, lo + i, s); })));
    w.put(view(log1p_of([&](auto i) { return x[PX][i] * vol[i]; })));
    w.put(view(log1p_of(cum_vol)));
    w.put([&](auto i) { return vol[i] / cum_vol(i); });
    w.put([&](auto i) { return vol[i] <= 0 ? 1.0 : 0.0; });
    w.put([&](auto i) { return minimum(x[SINCE_TRADE][i], 60.0); });
    w.put([&](auto i) { return x[SFM15][i]; });
    // volatility
    w.put([&](auto i) { return rv5[i]; });
    for (Series m : {R2M10, R2M15, R2M30}) w.put([&](auto i) { return std::sqrt(x[m][i]); });
    w.put([&](auto i) { return std::isnan(x[R2][i]) ? kNaN : std::sqrt(sum_r2(i) / n_r2(i)); });
    w.put([&](auto i) { return std::sqrt(x[HLM15][i]); });
    w.put(view(log_of([&](auto i) { return hi30[i] / lo30[i]; })));
    w.put([&](auto i) { return x[SD_RV5][i]; });
    w.put(view(log_of([&](auto i) { return (rv5[i] + kVolEps) / (std::sqrt(x[R2M30][i]) + kVolEps); })));
    w.put([&](auto i) { return std::fabs(r[i]); });
    // microstructure
    w.put([&](auto i) { return spread[i]; });
    w.put([&](auto i) { return spread[i] - x[SPM30][i]; });
    for (const double* size : {bs, as, depth}) w.put(view(log1p_of(size)));
    w.put([&](auto i) { return imb[i]; });
    for (Series ma : {IMA5, IMA15, IMA30}) w.put([&](auto i) { return x[ma][i]; });
    w.put([&](auto i) { return imb[i] - lag(imb, 1, i); });
    w.put([&](auto i) { return x[OFIS5][i] / x[DMA5][i]; });
    w.put([&](auto i) { return sign(bid[i] - x[PBID][i]); });
    w.put([&](auto i) { return sign(ask[i] - x[PASK][i]); });
    w.put([&](auto i) { return minimum(x[AGE][i], kMaxQuoteAge + 1); });
    // technical
    auto floor = [](double sd, double level) { return sd > kRelStdFloor * std::fabs(level) ? sd : kNaN; };
    const double *ma20 = x[MA20], *sd20 = x[SD20], *ma30 = x[MA30], *sd30 = x[SD30];
    w.put([&](auto i) { return 100 * gain(i) / (gain(i) + loss(i)); });
    w.put([&](auto i) { return macd(i); });
    w.put([&](auto i) { return signal(i); });
    w.put([&](auto i) { return macd(i) - signal(i); });
    w.put([&](auto i) { return (mid[i] - ma20[i] + 2 * sd20[i]) / (4 * floor(sd20[i], ma20[i])); });
    w.put([&](auto i) { return 4 * sd20[i] / ma20[i]; });
    w.put([&](auto i) { return (mid[i] - x[LO14][i]) / (x[HI14][i] - x[LO14][i]); });
    w.put([&](auto i) { return (mid[i] - ma30[i]) / floor(sd30[i], ma30[i]); });
    w.put([&](auto i) { return clock.phase[lo + i]; });
    w.put([&](auto i) { return clock.sin[lo + i]; });
    w.put([&](auto i) { return clock.cos[lo + i]; });
    w.flush(req.scale);
}

// Symbols [a, b): state first, then features, one symbol at a time (its data stays in cache).
// Compiled twice, everything it calls inlined (flatten): for AVX2 and for the baseline
// x86-64, chosen at load time. Without fused multiply-adds (-ffp-contract=off) and without
// reassociation, wider vectors change no rounding: both clones give the same bits.
__attribute__((target_clones("avx2", "default"), flatten)) void run_symbols(const Grid& g, const State& st, const Request& req, const Powers& p, const Clock& clock,
                 std::int64_t a, std::int64_t b) {
    Scratch scratch;
    Tile tile(g);
    const std::int64_t lo = std::max<std::int64_t>(0, req.start - kLookback);
    for (std::int64_t t0 = a; t0 < b; t0 += Tile::kSymbols) {
        const std::int64_t t1 = std::min(b, t0 + Tile::kSymbols);
        tile.load(t0, t1, std::min(req.done, lo));
        for (std::int64_t s = t0; s < t1; ++s) {
            if (req.done < g.W) advance(tile, st, p, s, req.done);
            if (req.start < g.W) symbol_features(tile, st, req, clock, s, lo, scratch);
        }
    }
}

}  // namespace

bool vector_math() { return vector_math_fns().log != nullptr || vector_math_fns().log1p != nullptr; }

void compute_features(const Grid& g, const State& st, const Request& req) {
    const Powers p(g.W);
    const Clock clock(g.W, req.n_minutes);
    const int threads = static_cast<int>(std::min<std::int64_t>(std::max(1, req.threads), std::max<std::int64_t>(1, g.S)));
    if (threads == 1) {
        run_symbols(g, st, req, p, clock, 0, g.S);
        return;
    }
    // Blocks of symbols taken from a shared counter, so one thread's delays hold up nobody.
    constexpr std::int64_t kBlock = 16;
    std::atomic<std::int64_t> next{0};
    auto work = [&] {
        for (std::int64_t a; (a = next.fetch_add(kBlock)) < g.S;)
            run_symbols(g, st, req, p, clock, a, std::min(g.S, a + kBlock));
    };
    std::vector<std::thread> workers;
    try {
        for (int k = 1; k < threads; ++k) workers.emplace_back(work);
    } catch (const std::system_error&) {
        // The system refused a thread: the ones running (and this one) do the rest.
    }
    work();
    for (auto& w : workers) w.join();
}

}  // namespace tthf::features
