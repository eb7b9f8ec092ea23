// Window enumeration and copying. See windows.hpp for the contract.
#include "windows.hpp"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <system_error>
#include <thread>
#include <type_traits>
#include <vector>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define TTHF_X86 1
#else
#define TTHF_X86 0
#endif

namespace tthf {
namespace {

// Copies whose output is at least this large bypass the cache (streaming stores).
// Below it the windows come out faster with cached stores (the overlapping source
// windows are cache-hot, and the consumer finds the batch in cache); above it the
// batch no longer fits in a typical last-level cache share, and skipping the
// read-for-ownership of every output line is what reaches memcpy bandwidth.
// Measured: cached stores win clearly up to ~14 MiB, streaming ones from ~28 MiB
// (docs/windows.md).
constexpr std::int64_t kNontemporalBytes = std::int64_t{16} << 20;

// A worker thread is only worth starting for at least this many output bytes: a
// thread start and join costs ~20 us on a busy machine, copying 4 MiB about 60 us.
constexpr std::int64_t kBytesPerThread = std::int64_t{4} << 20;

// Threads claim work in chunks of about this many output bytes.
constexpr std::int64_t kChunkBytes = std::int64_t{1} << 20;

// Calls fn(a, b) for every maximal run [a, b) of nonzero mask bytes in a row, in
// order, until fn returns false. Returns false if fn stopped the walk.
template <class Fn>
bool for_each_run(const std::uint8_t* row, std::int64_t M, Fn&& fn) {
    std::int64_t a = 0;
    while (a < M) {
        while (a < M && row[a] == 0) ++a;
        if (a == M) break;
        const void* zero = std::memchr(row + a, 0, static_cast<std::size_t>(M - a));
        const std::int64_t b = zero ? static_cast<const std::uint8_t*>(zero) - row : M;
        if (!fn(a, b)) return false;
        a = b;
    }
    return true;
}

// First valid window end inside the run [a, b): the smallest t >= a + L - 1 on the
// stride grid t = L - 1 + k * stride, i.e. k = ceil(a / stride).
inline std::int64_t first_end(std::int64_t a, const Rule& r) {
    return r.seq_len - 1 + (a + r.stride - 1) / r.stride * r.stride;
}

inline std::int64_t windows_in_run(std::int64_t a, std::int64_t b, const Rule& r) {
    const std::int64_t t0 = first_end(a, r);
    return t0 < b ? (b - 1 - t0) / r.stride + 1 : 0;
}

std::int64_t count_row(const std::uint8_t* row, std::int64_t M, const Rule& r) {
    std::int64_t n = 0;
    for_each_run(row, M, [&](std::int64_t a, std::int64_t b) {
        n += windows_in_run(a, b, r);
        return true;
    });
    return n;
}

// The parts of the day one copy needs, with window i's source computed on demand.
struct Source {
    const float* x;
    std::int64_t M, F, L, W;  // W = L * F floats per window
    const std::int32_t* sym;
    const std::int32_t* minute;

    const float* window(std::int64_t i) const {
        return x + (static_cast<std::int64_t>(sym[i]) * M + minute[i] - (L - 1)) * F;
    }
};

// Portable path: one memcpy per window (float32) or numpy's scalar conversion (float16).
template <class T>
void copy_range_scalar(const Source& s, std::int64_t i0, std::int64_t i1, T* out) {
    for (std::int64_t i = i0; i < i1; ++i) {
        const float* src = s.window(i);
        T* dst = out + i * s.W;
        if constexpr (std::is_same_v<T, float>) {
            std::memcpy(dst, src, static_cast<std::size_t>(s.W) * sizeof(float));
        } else {
            for (std::int64_t j = 0; j < s.W; ++j) {
                std::uint32_t bits;
                std::memcpy(&bits, src + j, sizeof bits);
                dst[j] = float_to_half_bits(bits);
            }
        }
    }
}

#if TTHF_X86
// Converts 8 floats at `from` and stores them at `dst` (aligned to the block size).
template <class T, bool NT>
__attribute__((target("avx2,f16c"))) inline void store_block(T* dst, const float* from) {
    const __m256 v = _mm256_loadu_ps(from);
    if constexpr (std::is_same_v<T, float>) {
        if constexpr (NT) _mm256_stream_ps(dst, v);
        else _mm256_store_ps(dst, v);
    } else {
        __m128i h = _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        // The hardware quiets signalling NaNs; numpy keeps their payload. Match numpy.
        if (_mm256_movemask_ps(_mm256_cmp_ps(v, v, _CMP_UNORD_Q))) {
            alignas(16) std::uint16_t fixed[8];
            for (int k = 0; k < 8; ++k) {
                std::uint32_t bits;
                std::memcpy(&bits, from + k, sizeof bits);
                fixed[k] = float_to_half_bits(bits);
            }
            h = _mm_load_si128(reinterpret_cast<const __m128i*>(fixed));
        }
        if constexpr (NT) _mm_stream_si128(reinterpret_cast<__m128i*>(dst), h);
        else _mm_store_si128(reinterpret_cast<__m128i*>(dst), h);
    }
}

// AVX2 + F16C path. The output of windows [i0, i1) is one contiguous stream, so it is
// written in aligned blocks of 8 elements regardless of where windows start; a block
// that straddles two windows is assembled in a small buffer. Streaming (NT) stores
// need that alignment; cached stores use it too.
template <class T, bool NT>
__attribute__((target("avx2,f16c"))) void copy_range_avx2(const Source& s, std::int64_t i0,
                                                          std::int64_t i1, T* out) {
    constexpr std::int64_t kBlock = 8;
    constexpr std::uintptr_t kAlign = kBlock * sizeof(T);
    if (i0 >= i1) return;
    T* d = out + i0 * s.W;
    T* const end = out + i1 * s.W;

    // Cursor over the source: window i, element j.
    std::int64_t i = i0, j = 0;
    const float* src = s.window(i);
    auto advance_window = [&] {
        ++i;
        j = 0;
        if (i < i1) src = s.window(i);
    };
    auto scalar_store = [&](T* dst) {
        if constexpr (std::is_same_v<T, float>) {
            *dst = src[j];
        } else {
            std::uint32_t bits;
            std::memcpy(&bits, src + j, sizeof bits);
            *dst = float_to_half_bits(bits);
        }
        if (++j == s.W) advance_window();
    };

    // Head: single elements up to the first aligned block.
    while (d < end && reinterpret_cast<std::uintptr_t>(d) % kAlign != 0) scalar_store(d++);

    alignas(32) float staged[kBlock];
    while (end - d >= kBlock) {
        const std::int64_t avail = s.W - j;
        if (avail >= kBlock) {
            const std::int64_t blocks = std::min<std::int64_t>(avail, end - d) / kBlock;
            for (std::int64_t b = 0; b < blocks; ++b) {
                store_block<T, NT>(d, src + j);
                d += kBlock;
                j += kBlock;
            }
            if (j == s.W) advance_window();
        } else {
            // The block straddles windows (several when a window is shorter than a block).
            for (std::int64_t k = 0; k < kBlock; ++k) {
                staged[k] = src[j];
                if (++j == s.W) advance_window();
            }
            store_block<T, NT>(d, staged);
            d += kBlock;
        }
    }
    while (d < end) scalar_store(d++);
    if constexpr (NT) _mm_sfence();
}

bool cpu_has_avx2_f16c() {
    static const bool has = [] {
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c");
    }();
    return has;
}
#endif

template <class T>
void copy_range(const Source& s, std::int64_t i0, std::int64_t i1, T* out, bool nt) {
#if TTHF_X86
    if (cpu_has_avx2_f16c()) {
        if (nt) copy_range_avx2<T, true>(s, i0, i1, out);
        else copy_range_avx2<T, false>(s, i0, i1, out);
        return;
    }
#endif
    (void)nt;
    copy_range_scalar(s, i0, i1, out);
}

template <class T>
void copy_parallel(const Source& s, std::int64_t n, T* out, int threads, bool nt) {
    if (threads <= 1) {
        copy_range(s, 0, n, out, nt);
        return;
    }
    // Threads take chunks of windows from a shared counter, so one that the OS
    // delays does not hold up the others; this thread works too.
    const std::int64_t window_bytes = s.W * static_cast<std::int64_t>(sizeof(T));
    const std::int64_t chunk = std::max<std::int64_t>(1, kChunkBytes / window_bytes);
    std::atomic<std::int64_t> next{0};
    auto work = [&] {
        for (;;) {
            const std::int64_t i0 = next.fetch_add(chunk, std::memory_order_relaxed);
            if (i0 >= n) return;
            copy_range(s, i0, std::min(n, i0 + chunk), out, nt);
        }
    };
    std::vector<std::thread> workers;
    workers.reserve(static_cast<std::size_t>(threads - 1));
    try {
        for (int k = 1; k < threads; ++k) workers.emplace_back(work);
    } catch (const std::system_error&) {
        // The system refused a thread: the ones running (and this one) do the rest.
    }
    work();
    for (auto& w : workers) w.join();
}

}  // namespace

std::uint16_t float_to_half_bits(std::uint32_t f) {
    // numpy's npy_floatbits_to_halfbits (ties to even), without the FP status flags.
    const std::uint16_t sign = static_cast<std::uint16_t>((f & 0x80000000u) >> 16);
    std::uint32_t exp = f & 0x7f800000u;
    std::uint32_t sig;

    if (exp >= 0x47800000u) {  // overflow to inf, inf, or NaN
        if (exp == 0x7f800000u && (f & 0x007fffffu) != 0) {
            // NaN: keep the top payload bits; make sure it stays a NaN.
            std::uint16_t h = static_cast<std::uint16_t>(0x7c00u + ((f & 0x007fffffu) >> 13));
            if (h == 0x7c00u) ++h;
            return static_cast<std::uint16_t>(sign + h);
        }
        return static_cast<std::uint16_t>(sign + 0x7c00u);
    }
    if (exp <= 0x38000000u) {  // half subnormal or zero
        if (exp < 0x33000000u) return sign;
        exp >>= 23;
        sig = 0x00800000u + (f & 0x007fffffu);
        sig >>= (113 - exp);
        // Round to nearest even; bits shifted out above are checked in the original.
        if ((sig & 0x00003fffu) != 0x00001000u || (f & 0x000007ffu)) sig += 0x00001000u;
        return static_cast<std::uint16_t>(sign + (sig >> 13));
    }
    const std::uint16_t hexp = static_cast<std::uint16_t>((exp - 0x38000000u) >> 13);
    sig = f & 0x007fffffu;
    if ((sig & 0x00003fffu) != 0x00001000u) sig += 0x00001000u;
    // A carry out of the significand bumps the exponent (possibly to inf): correct.
    return static_cast<std::uint16_t>(sign + hexp + (sig >> 13));
}

bool simd_available() {
#if TTHF_X86
    return cpu_has_avx2_f16c();
#else
    return false;
#endif
}

std::int64_t count_windows(const Day& day, const Rule& rule) {
    std::int64_t n = 0;
    for (std::int64_t s = 0; s < day.S; ++s) n += count_row(day.mask + s * day.M, day.M, rule);
    return n;
}

std::int64_t enumerate_windows(const Day& day, const Rule& rule, std::int64_t start,
                               std::int64_t capacity, std::int32_t* sym, std::int32_t* minute,
                               std::int64_t* total) {
    std::int64_t ordinal = 0;  // ordinal of the next window met
    std::int64_t n = 0;
    for (std::int64_t s = 0; s < day.S; ++s) {
        const std::uint8_t* row = day.mask + s * day.M;
        if (ordinal < start) {
            const std::int64_t c = count_row(row, day.M, rule);
            if (ordinal + c <= start) {
                ordinal += c;
                continue;
            }
        }
        if (n == capacity) {
            *total = -1;
            return n;
        }
        for_each_run(row, day.M, [&](std::int64_t a, std::int64_t b) {
            const std::int64_t c = windows_in_run(a, b, rule);
            if (ordinal + c <= start) {
                ordinal += c;
                return true;
            }
            const std::int64_t skip = std::max<std::int64_t>(0, start - ordinal);
            ordinal += skip;
            for (std::int64_t t = first_end(a, rule) + skip * rule.stride; t < b && n < capacity;
                 t += rule.stride, ++n, ++ordinal) {
                sym[n] = static_cast<std::int32_t>(s);
                minute[n] = static_cast<std::int32_t>(t);
            }
            return n < capacity;
        });
        if (n == capacity) {
            *total = -1;
            return n;
        }
    }
    *total = ordinal;
    return n;
}

void copy_windows(const Day& day, const Rule& rule, const std::int32_t* sym,
                  const std::int32_t* minute, std::int64_t n, void* out, OutType type,
                  int threads, int nontemporal) {
    const std::int64_t W = rule.seq_len * day.F;
    const std::int64_t elem = type == OutType::f32 ? 4 : 2;
    const std::int64_t bytes = n * W * elem;
    if (bytes == 0) return;
    const bool nt = nontemporal < 0 ? bytes >= kNontemporalBytes : nontemporal != 0;
    const std::int64_t useful = std::max<std::int64_t>(1, bytes / kBytesPerThread);
    const int t = static_cast<int>(std::min<std::int64_t>({threads, useful, n}));
    const Source src{day.x, day.M, day.F, rule.seq_len, W, sym, minute};
    if (type == OutType::f32) copy_parallel(src, n, static_cast<float*>(out), t, nt);
    else copy_parallel(src, n, static_cast<std::uint16_t*>(out), t, nt);
}

}  // namespace tthf
