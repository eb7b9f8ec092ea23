// The features kernel: a day's clean (minutes, symbols) grid -> the (symbols, minutes,
// features) float32 feature grid, with the day statistics kept in a resumable state.
//
// Pure C++ (no Python): binding.cpp checks every array and calls compute_features with
// the GIL released. docs/features.md defines every value; the numpy oracle in
// tests/features/feature_oracle.py is the same computation, and the tests hold the two
// to float32 rounding.
//
// Bits depend only on the values a window covers, never on where the computed range
// starts: trailing sums are sums of power-of-two blocks combined in a fixed order,
// running sums resume from the minute before. That is what lets the real-time engine
// compute only the last minutes (from LOOKBACK minutes before the first one wanted) and
// still get the bits of the full-day batch. The file is compiled with
// -ffp-contract=off, so no fused multiply-add changes a rounding, and the per-symbol
// passes twice (AVX2 and baseline x86-64, chosen at load), which give the same bits.
#pragma once

#include <cstdint>

namespace tthf::features {

// The grid's columns the formulas read, in this order (grid.GRID_COLUMNS' names).
enum Column : int { BID, ASK, BID_SIZE, ASK_SIZE, HIGH, LOW, CLOSE, VWAP, VOLUME, TRADE_COUNT, N_COLUMNS };
extern const char* const kColumnNames[N_COLUMNS];

// The state's per-minute fields: forward-fill minutes (int32, -1 = never) and running
// statistics (float64), (symbols, minutes, fields) C-contiguous.
enum IntField : int { LAST_QUOTE, LAST_TRADE, LAST_PX_AT, FIRST_QUOTE, N_INT_FIELDS };
enum FloatField : int {
    MID, LOG_MID, RET, CUM_PV, CUM_VPX, CUM_VOL, SUM_R2, N_R2, S_EMA12, S_EMA26, S_GAIN, S_LOSS, S_SIGNAL,
    MACD, GAIN, LOSS, MACD_SIGNAL, N_FLOAT_FIELDS
};

// The features this kernel computes, in output order (formulas.FEATURE_NAMES must match).
constexpr int kNumFeatures = 59;
extern const char* const kFeatureNames[kNumFeatures];

// Minutes of history a feature at a minute reads, at most (state.LOOKBACK).
constexpr std::int64_t kLookback = 40;
// A minute's quote counts for the mask while it is at most this many minutes old.
constexpr double kMaxQuoteAge = 5;

struct Grid {
    const double* col[N_COLUMNS];  // each (W, S) time-major, C-contiguous; NaN = missing
    std::int64_t W, S;
};

struct State {
    std::int32_t* ints;  // (S, N, N_INT_FIELDS)
    double* floats;      // (S, N, N_FLOAT_FIELDS)
    std::int64_t N;      // minutes of room, >= W
};

// The run's scaling, applied as features are written: output column j is kernel feature
// index[j], (x - mean[j]) * inv_std[j] clipped to [-clip, clip], all in float32 (the bits
// numpy's float32 ops on the unscaled grid give). index == nullptr: unscaled, all features.
struct Scale {
    const std::int32_t* index = nullptr;  // (n_out,) in [0, kNumFeatures)
    const float* mean = nullptr;          // (n_out,)
    const float* inv_std = nullptr;       // (n_out,)
    float clip = 0;
    int n_out = kNumFeatures;
};

struct Request {
    std::int64_t done;       // minutes 0..done-1 of the state are up to date (<= W)
    std::int64_t start;      // first minute to output (<= W)
    std::int64_t n_minutes;  // the session's length (tod features)
    const double* neutral;   // (kNumFeatures,) what a non-finite float32 value becomes
    float* out;              // (S, W - start, scale.n_out)
    int threads;             // >= 1
    Scale scale;             // default: unscaled
};

// Brings the state's minutes done..W-1 up to date, then writes the features of minutes
// start..W-1, computed over the minutes from max(0, start - kLookback) on.
void compute_features(const Grid& g, const State& st, const Request& req);

// Whether logs run four at a time through glibc's libmvec (AVX2) in this process, rather
// than through the scalar libm calls (no AVX2, no libmvec, or TTHF_SCALAR_MATH=1). The two
// differ by a few float64 ulps, which can move a float32 feature by one ulp: bits are the
// same within one machine and setting (batch and real time), not across the two.
bool vector_math();

}  // namespace tthf::features
