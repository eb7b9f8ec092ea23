// The windowing kernel: cut one day's (symbols, minutes, features) float32 grid into
// contiguous (n, seq_len, features) model batches, float32 or float16.
//
// Pure C++ (no Python): the pybind11 binding in binding.cpp checks every input and
// calls these functions with the GIL released. Callers here are trusted: pointers and
// sizes are assumed to have been validated.
//
// Window rule (docs/windows.md): the window ending at minute t covers t-L+1 .. t and is
// valid iff t >= L-1, (t - (L-1)) % stride == 0 and mask[s, t-L+1 .. t] are all true.
// Windows are enumerated symbol-major (s outer, t ascending); a cursor is the ordinal
// of a window in that order.
#pragma once

#include <cstddef>
#include <cstdint>

namespace tthf {

// One day's grid, C-contiguous. x is (S, M, F) float32; mask is (S, M) bytes, nonzero
// meaning valid (numpy bool).
struct Day {
    const float* x;
    const std::uint8_t* mask;
    std::int64_t S, M, F;
};

struct Rule {
    std::int64_t seq_len;  // L >= 1
    std::int64_t stride;   // >= 1
};

enum class OutType { f32, f16 };

// Number of valid windows of the day.
std::int64_t count_windows(const Day& day, const Rule& rule);

// Writes the (symbol, end minute) of the valid windows with ordinals
// start .. start+capacity-1 (fewer at the end of the day) and returns how many.
// total is set to the day's window count when the scan reached the end of the day
// (always the case when fewer than capacity windows were found), else to -1.
std::int64_t enumerate_windows(const Day& day, const Rule& rule, std::int64_t start,
                               std::int64_t capacity, std::int32_t* sym, std::int32_t* minute,
                               std::int64_t* total);

// Copies the n windows ending at (sym[i], minute[i]) into out, window i at
// out + i * L * F elements. Positions must be in bounds (minute in [L-1, M)).
// threads: the most worker threads to use (the kernel uses fewer for small copies).
// nontemporal: -1 = decide by output size, 0 = cached stores, 1 = streaming stores.
void copy_windows(const Day& day, const Rule& rule, const std::int32_t* sym,
                  const std::int32_t* minute, std::int64_t n, void* out, OutType type,
                  int threads, int nontemporal);

// float32 -> float16 bits, round to nearest even; bit-identical to numpy's
// astype(float16), NaN payloads included.
std::uint16_t float_to_half_bits(std::uint32_t f);

// Whether the AVX2 + F16C code path is in use on this machine.
bool simd_available();

}  // namespace tthf
