// pybind11 binding of the C++ kernels (windowing and features): tthf.engine._kernels.
//
// Every argument is checked here, before the GIL is released: buffer protocol,
// dtype, dimensions, shapes, C-contiguity, alignment, writability, sizes, overlap and
// index bounds. A bad argument raises tthf.errors.UsageError naming the argument,
// the problem and the fix; nothing past this file ever sees an unchecked value.
// The friendly Python API (torch tensors, defaults, docstrings) is tthf.engine.windows.
#include <cmath>
#include <pybind11/pybind11.h>

#include <climits>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "features.hpp"
#include "windows.hpp"

namespace py = pybind11;

namespace {

py::handle usage_error;  // tthf.errors.UsageError, set at import

[[noreturn]] void fail(const std::string& msg) {
    PyErr_SetString(usage_error.ptr(), msg.c_str());
    throw py::error_already_set();
}

std::string shape_str(const Py_buffer& b) {
    std::ostringstream os;
    os << '(';
    for (int d = 0; d < b.ndim; ++d) os << (d ? ", " : "") << b.shape[d] << (b.ndim == 1 ? "," : "");
    os << ')';
    return os.str();
}

// A Py_buffer view held for the duration of a call.
class View {
  public:
    View(const py::handle& obj, const char* name, bool writable) : name_(name) {
        if (!PyObject_CheckBuffer(obj.ptr())) {
            fail(std::string(name) + " must be a numpy array (or another object with the buffer " +
                 "protocol), got " + py::str(py::type::of(obj)).cast<std::string>());
        }
        const int flags = PyBUF_RECORDS_RO | (writable ? PyBUF_WRITABLE : 0);
        if (PyObject_GetBuffer(obj.ptr(), &buf_, flags) != 0) {
            PyErr_Clear();
            if (writable && PyObject_GetBuffer(obj.ptr(), &buf_, PyBUF_RECORDS_RO) == 0) {
                PyBuffer_Release(&buf_);
                fail(std::string(name) + " is read-only; the kernel writes into it: pass a " +
                     "writable array (e.g. np.empty(...)) instead of a read-only view");
            }
            fail(std::string(name) + " does not expose a strided buffer; pass a numpy array");
        }
        held_ = true;
    }
    View(const View&) = delete;
    View& operator=(const View&) = delete;
    ~View() {
        if (held_) PyBuffer_Release(&buf_);
    }

    const Py_buffer& buf() const { return buf_; }
    std::int64_t dim(int d) const { return buf_.shape[d]; }
    void* ptr() const { return buf_.buf; }
    std::int64_t nbytes() const { return buf_.len; }

    // The item format without a native byte-order prefix ('@', '=', '<' on little-endian).
    std::string format() const {
        std::string f = buf_.format ? buf_.format : "B";
        if (!f.empty() && (f[0] == '@' || f[0] == '=' || (f[0] == '<' && little_endian())))
            f.erase(0, 1);
        return f;
    }

    void require_ndim(int ndim, const char* layout) const {
        if (buf_.ndim != ndim) {
            fail(name_ + " must be " + std::to_string(ndim) + "-dimensional " + layout + ", got shape " +
                 shape_str(buf_));
        }
    }

    // C-contiguous and aligned to the item size; dimensions of length 1 may have any
    // stride (numpy's own rule).
    void require_c_contiguous() const {
        std::int64_t expected = buf_.itemsize;
        bool empty = false;
        for (int d = 0; d < buf_.ndim; ++d) empty |= buf_.shape[d] == 0;
        for (int d = buf_.ndim - 1; d >= 0 && !empty; --d) {
            if (buf_.shape[d] != 1 && buf_.strides[d] != expected) {
                fail(name_ + " must be C-contiguous, got strides that are not; pass " +
                     "np.ascontiguousarray(" + name_ + ")");
            }
            expected *= buf_.shape[d];
        }
        if (reinterpret_cast<std::uintptr_t>(buf_.buf) % static_cast<std::uintptr_t>(buf_.itemsize)) {
            fail(name_ + " is not aligned to its item size; pass a copy (" + name_ + ".copy())");
        }
    }

    const std::string& name() const { return name_; }

  private:
    static bool little_endian() {
        const std::uint16_t one = 1;
        std::uint8_t first;
        std::memcpy(&first, &one, 1);
        return first == 1;
    }

    std::string name_;
    Py_buffer buf_{};
    bool held_ = false;
};

void require_format(const View& v, const char* fmt, Py_ssize_t itemsize, const char* dtype,
                    const char* fix) {
    if (v.format() != fmt || v.buf().itemsize != itemsize) {
        fail(v.name() + " must have dtype " + dtype + ", got buffer format '" + v.format() + "'; " + fix);
    }
}

void require_int32(const View& v) {
    const std::string f = v.format();
    const bool ok = v.buf().itemsize == 4 && (f == "i" || (f == "l" && sizeof(long) == 4));
    if (!ok) {
        fail(v.name() + " must have dtype int32, got buffer format '" + f + "'; pass " +
             "np.empty(n, dtype=np.int32)");
    }
}

void require_disjoint(const View& a, const View& b) {
    const auto* pa = static_cast<const char*>(a.ptr());
    const auto* pb = static_cast<const char*>(b.ptr());
    if (a.nbytes() && b.nbytes() && pa < pb + b.nbytes() && pb < pa + a.nbytes()) {
        fail(a.name() + " and " + b.name() + " share memory; pass separate arrays");
    }
}

// Bounded by INT32_MAX, like the grid, so no window arithmetic can overflow.
void require_rule(std::int64_t seq_len, std::int64_t stride) {
    if (seq_len < 1 || seq_len > INT32_MAX) {
        fail("seq_len must be in [1, 2**31-1], got " + std::to_string(seq_len));
    }
    if (stride < 1 || stride > INT32_MAX) {
        fail("stride must be in [1, 2**31-1] (1 = every minute), got " + std::to_string(stride));
    }
}

void require_threads(int threads) {
    if (threads < 1) fail("threads must be >= 1, got " + std::to_string(threads));
}

int nontemporal_mode(const py::object& nontemporal) {
    return nontemporal.is_none() ? -1 : (nontemporal.cast<bool>() ? 1 : 0);
}

// The (S, M, F) float32 features of a day.
struct Features {
    View v;
    Features(const py::handle& obj) : v(obj, "features", false) {
        v.require_ndim(3, "(symbols, minutes, features)");
        require_format(v, "f", 4, "float32", "convert with features.astype(np.float32)");
        v.require_c_contiguous();
        if (v.dim(0) > INT32_MAX || v.dim(1) > INT32_MAX) {
            fail("features has more than 2**31-1 symbols or minutes, got shape " + shape_str(v.buf()));
        }
    }
};

// The (S, M) bool validity mask; shape checked against features by the caller.
struct Mask {
    View v;
    Mask(const py::handle& obj) : v(obj, "mask", false) {
        v.require_ndim(2, "(symbols, minutes)");
        require_format(v, "?", 1, "bool", "convert with mask.astype(bool)");
        v.require_c_contiguous();
        if (v.dim(0) > INT32_MAX || v.dim(1) > INT32_MAX) {
            fail("mask has more than 2**31-1 symbols or minutes, got shape " + shape_str(v.buf()));
        }
    }
};

// The (capacity, seq_len, F) float32 or float16 output buffer.
struct Out {
    View v;
    tthf::OutType type;
    Out(const py::handle& obj, std::int64_t seq_len, std::int64_t F) : v(obj, "out", true) {
        v.require_ndim(3, "(capacity, seq_len, features)");
        const std::string f = v.format();
        if (f == "f" && v.buf().itemsize == 4) type = tthf::OutType::f32;
        else if (f == "e" && v.buf().itemsize == 2) type = tthf::OutType::f16;
        else fail("out must have dtype float32 or float16, got buffer format '" + f + "'");
        if (v.dim(1) != seq_len || v.dim(2) != F) {
            fail("out must have shape (capacity, " + std::to_string(seq_len) + ", " + std::to_string(F) +
                 ") for seq_len=" + std::to_string(seq_len) + " and " + std::to_string(F) +
                 " features, got " + shape_str(v.buf()));
        }
        v.require_c_contiguous();
    }
    std::int64_t capacity() const { return v.dim(0); }
};

// A 1-D int32 index array of at least `length` elements.
struct Index {
    View v;
    Index(const py::handle& obj, const char* name, bool writable, std::int64_t length)
        : v(obj, name, writable) {
        v.require_ndim(1, "(n,)");
        require_int32(v);
        v.require_c_contiguous();
        if (v.dim(0) < length) {
            fail(std::string(name) + " holds " + std::to_string(v.dim(0)) + " entries but " +
                 std::to_string(length) + " are needed (out's capacity); pass a longer array");
        }
    }
    std::int32_t* data() const { return static_cast<std::int32_t*>(v.ptr()); }
};

tthf::Day day_of(const Features& f, const Mask& m) {
    if (m.v.dim(0) != f.v.dim(0) || m.v.dim(1) != f.v.dim(1)) {
        fail("mask must have shape (symbols, minutes) = (" + std::to_string(f.v.dim(0)) + ", " +
             std::to_string(f.v.dim(1)) + ") to match features, got " + shape_str(m.v.buf()));
    }
    return {static_cast<const float*>(f.v.ptr()), static_cast<const std::uint8_t*>(m.v.ptr()),
            f.v.dim(0), f.v.dim(1), f.v.dim(2)};
}

tthf::Day mask_only(const Mask& m) {
    return {nullptr, static_cast<const std::uint8_t*>(m.v.ptr()), m.v.dim(0), m.v.dim(1), 0};
}

std::int64_t count_windows(const py::object& mask, std::int64_t seq_len, std::int64_t stride) {
    require_rule(seq_len, stride);
    const Mask m(mask);
    const tthf::Day day = mask_only(m);
    py::gil_scoped_release nogil;
    return tthf::count_windows(day, {seq_len, stride});
}

py::tuple window_positions(const py::object& mask, std::int64_t seq_len, std::int64_t stride) {
    require_rule(seq_len, stride);
    const Mask m(mask);
    const tthf::Day day = mask_only(m);
    std::int64_t n;
    {
        py::gil_scoped_release nogil;
        n = tthf::count_windows(day, {seq_len, stride});
    }
    py::module_ np = py::module_::import("numpy");
    py::object sym = np.attr("empty")(n, np.attr("int32"));
    py::object minute = np.attr("empty")(n, np.attr("int32"));
    const Index vs(sym, "sym_idx", true, n), vm(minute, "minute_idx", true, n);
    {
        py::gil_scoped_release nogil;
        std::int64_t total;
        tthf::enumerate_windows(day, {seq_len, stride}, 0, n, vs.data(), vm.data(), &total);
    }
    return py::make_tuple(sym, minute);
}

py::tuple cut_windows(const py::object& features, const py::object& mask, const py::object& out,
                      std::int64_t seq_len, std::int64_t stride, std::int64_t start,
                      const py::object& sym_out, const py::object& minute_out, int threads,
                      const py::object& nontemporal) {
    require_rule(seq_len, stride);
    require_threads(threads);
    if (start < 0) fail("start must be >= 0 (a window ordinal), got " + std::to_string(start));
    const Features f(features);
    const Mask m(mask);
    const tthf::Day day = day_of(f, m);
    const Out o(out, seq_len, day.F);
    require_disjoint(o.v, f.v);
    require_disjoint(o.v, m.v);
    const std::int64_t cap = o.capacity();

    // Positions go to the caller's arrays, or to scratch space reused across calls.
    thread_local std::vector<std::int32_t> scratch;
    std::int32_t* sym = nullptr;
    std::int32_t* minute = nullptr;
    std::optional<Index> vs, vm;
    if (sym_out.is_none() != minute_out.is_none()) {
        fail("pass both sym_out and minute_out, or neither");
    }
    if (!sym_out.is_none()) {
        vs.emplace(sym_out, "sym_out", true, cap);
        vm.emplace(minute_out, "minute_out", true, cap);
        for (const View* a : {&vs->v, &vm->v}) {
            require_disjoint(*a, o.v);
            require_disjoint(*a, f.v);
            require_disjoint(*a, m.v);
        }
        require_disjoint(vs->v, vm->v);
        sym = vs->data();
        minute = vm->data();
    } else {
        if (static_cast<std::int64_t>(scratch.size()) < 2 * cap) scratch.resize(static_cast<std::size_t>(2 * cap));
        sym = scratch.data();
        minute = scratch.data() + cap;
    }

    std::int64_t n, total;
    {
        py::gil_scoped_release nogil;
        n = tthf::enumerate_windows(day, {seq_len, stride}, start, cap, sym, minute, &total);
        if (total < 0 || start <= total) {
            tthf::copy_windows(day, {seq_len, stride}, sym, minute, n, o.v.ptr(), o.type, threads,
                               nontemporal_mode(nontemporal));
        }
    }
    if (total >= 0 && start > total) {
        fail("start=" + std::to_string(start) + " is past the end of the day's " + std::to_string(total) +
             " windows; start from 0 or from the next_start a previous call returned");
    }
    return py::make_tuple(n, start + n);
}

std::int64_t gather_windows(const py::object& features, const py::object& sym_idx,
                            const py::object& minute_idx, const py::object& out,
                            std::int64_t seq_len, int threads, const py::object& nontemporal) {
    require_rule(seq_len, 1);
    require_threads(threads);
    const Features f(features);
    const std::int64_t S = f.v.dim(0), M = f.v.dim(1), F = f.v.dim(2);
    const Index vs(sym_idx, "sym_idx", false, 0);
    const Index vm(minute_idx, "minute_idx", false, 0);
    const std::int64_t n = vs.v.dim(0);
    if (vm.v.dim(0) != n) {
        fail("sym_idx and minute_idx must have the same length, got " + std::to_string(n) + " and " +
             std::to_string(vm.v.dim(0)));
    }
    const Out o(out, seq_len, F);
    if (o.capacity() < n) {
        fail("out holds " + std::to_string(o.capacity()) + " windows but " + std::to_string(n) +
             " were asked for; pass an out with capacity >= len(sym_idx)");
    }
    for (const View* a : {&f.v, &vs.v, &vm.v}) require_disjoint(o.v, *a);

    const std::int32_t* sym = vs.data();
    const std::int32_t* minute = vm.data();
    std::int64_t bad = -1;
    {
        py::gil_scoped_release nogil;
        for (std::int64_t i = 0; i < n && bad < 0; ++i) {
            if (sym[i] < 0 || sym[i] >= S || minute[i] < seq_len - 1 || minute[i] >= M) bad = i;
        }
        if (bad < 0) {
            const tthf::Day day{static_cast<const float*>(f.v.ptr()), nullptr, S, M, F};
            tthf::copy_windows(day, {seq_len, 1}, sym, minute, n, o.v.ptr(), o.type, threads,
                               nontemporal_mode(nontemporal));
        }
    }
    if (bad >= 0) {
        fail("window " + std::to_string(bad) + " (sym_idx=" + std::to_string(sym[bad]) +
             ", minute_idx=" + std::to_string(minute[bad]) + ") is out of bounds: sym_idx must be in [0, " +
             std::to_string(S) + ") and minute_idx (the window's last minute) in [" +
             std::to_string(seq_len - 1) + ", " + std::to_string(M) + ")");
    }
    return n;
}

// ---- the features kernel ----------------------------------------------------------

namespace fk = tthf::features;

// A C-contiguous array of the given dimensions and dtype.
struct Array : View {
    Array(const py::handle& obj, const char* name, bool writable, int ndim, const char* layout, const char* fmt,
          Py_ssize_t itemsize, const char* dtype)
        : View(obj, name, writable) {
        require_ndim(ndim, layout);
        const std::string fix = std::string("pass np.ascontiguousarray(") + name + ", dtype=np." + dtype + ")";
        require_format(*this, fmt, itemsize, dtype, fix.c_str());
        require_c_contiguous();
    }
};

void require_shape(const View& v, std::vector<std::int64_t> want, const std::string& why) {
    for (std::size_t d = 0; d < want.size(); ++d) {
        if (v.dim(static_cast<int>(d)) != want[d]) {
            std::ostringstream os;
            os << '(';
            for (std::size_t k = 0; k < want.size(); ++k) os << (k ? ", " : "") << want[k];
            os << ')';
            fail(v.name() + " must have shape " + os.str() + " (" + why + "), got " + shape_str(v.buf()));
        }
    }
}

// The table the caller computes must be the one compiled here, name for name.
void require_feature_table(const py::sequence& names) {
    const auto n = static_cast<std::int64_t>(py::len(names));
    for (std::int64_t i = 0; i < std::max<std::int64_t>(n, fk::kNumFeatures); ++i) {
        const std::string got = i < n ? py::str(names[static_cast<std::size_t>(i)]).cast<std::string>() : "(none)";
        const std::string want = i < fk::kNumFeatures ? fk::kFeatureNames[i] : "(none)";
        if (got != want) {
            fail("the feature table (formulas.FEATURES, " + std::to_string(n) + " features) names '" + got +
                 "' at column " + std::to_string(i) + " where the compiled features kernel (" +
                 std::to_string(fk::kNumFeatures) + " features, csrc/features.cpp) computes '" + want +
                 "'; a new or reordered feature needs its formula in csrc/features.cpp and a rebuild (bash .ci/dev)");
        }
    }
}

// State minute indices must lie in [-1, t] (the kernel indexes the grid and the state with them).
void require_state_indices(const std::int32_t* ints, std::int64_t S, std::int64_t N, std::int64_t from,
                           std::int64_t to) {
    std::int64_t bad_s = -1, bad_t = -1;
    {
        py::gil_scoped_release nogil;
        for (std::int64_t s = 0; s < S && bad_s < 0; ++s) {
            for (std::int64_t t = from; t < to && bad_s < 0; ++t) {
                const std::int32_t* v = ints + (s * N + t) * fk::N_INT_FIELDS;
                for (int k = 0; k < fk::N_INT_FIELDS; ++k) {
                    if (v[k] < -1 || v[k] > t) bad_s = s, bad_t = t;
                }
            }
        }
    }
    if (bad_s >= 0) {
        fail("state ints[" + std::to_string(bad_s) + ", " + std::to_string(bad_t) +
             "] holds a minute outside [-1, " + std::to_string(bad_t) +
             "]: the state is not one the kernel wrote; pass done=0 to recompute it");
    }
}

void compute_features(const py::sequence& columns, const py::object& ints, const py::object& floats,
                      std::int64_t done, std::int64_t start, std::int64_t n_minutes, const py::object& neutral,
                      const py::sequence& names, const py::object& out, int threads, const py::object& scale) {
    require_feature_table(names);
    require_threads(threads);
    if (py::len(columns) != fk::N_COLUMNS) {
        fail("columns must hold the " + std::to_string(fk::N_COLUMNS) + " grid columns (bid, ask, bid_size, " +
             "ask_size, high, low, close, vwap, volume, trade_count), got " + std::to_string(py::len(columns)));
    }
    std::vector<std::string> col_names;
    for (int c = 0; c < fk::N_COLUMNS; ++c) col_names.push_back(std::string("columns[") + fk::kColumnNames[c] + "]");
    std::vector<std::unique_ptr<Array>> cols;
    fk::Grid g{};
    for (int c = 0; c < fk::N_COLUMNS; ++c) {
        cols.push_back(std::make_unique<Array>(columns[static_cast<std::size_t>(c)], col_names[c].c_str(), false, 2,
                                               "(minutes, symbols)", "d", 8, "float64"));
        if (c > 0) require_shape(*cols[c], {g.W, g.S}, "like columns[bid]");
        g.W = cols[c]->dim(0), g.S = cols[c]->dim(1);
        g.col[c] = static_cast<const double*>(cols[c]->ptr());
    }
    if (g.W > INT32_MAX) fail("columns have more than 2**31-1 minutes, got " + std::to_string(g.W));
    const Array vi(ints, "ints", true, 3, "(symbols, minutes, fields)", "i", 4, "int32");
    const Array vf(floats, "floats", true, 3, "(symbols, minutes, fields)", "d", 8, "float64");
    const std::int64_t N = vi.dim(1);
    if (N < g.W) fail("ints and floats must have room for the grid's " + std::to_string(g.W) + " minutes, got " +
                      std::to_string(N) + "; size the state for the session");
    require_shape(vi, {g.S, N, fk::N_INT_FIELDS}, "symbols, minutes of room, int fields");
    require_shape(vf, {g.S, N, fk::N_FLOAT_FIELDS}, "symbols, minutes of room, float fields");
    if (done < 0 || done > g.W) fail("done must be in [0, " + std::to_string(g.W) + "], got " + std::to_string(done));
    if (start < 0 || start > g.W) fail("start must be in [0, " + std::to_string(g.W) + "], got " + std::to_string(start));
    if (n_minutes < 1) fail("n_minutes must be >= 1, got " + std::to_string(n_minutes));
    const Array vn(neutral, "neutral", false, 1, "(features,)", "d", 8, "float64");
    require_shape(vn, {fk::kNumFeatures}, "one neutral value per feature");
    fk::Scale sc;
    std::vector<std::unique_ptr<Array>> scale_arrays;
    if (!scale.is_none()) {
        const auto parts = scale.cast<py::tuple>();
        if (parts.size() != 4) fail("scale must be (index, mean, inv_std, clip), got " + std::to_string(parts.size()) + " items");
        scale_arrays.push_back(std::make_unique<Array>(parts[0], "scale index", false, 1, "(outputs,)", "i", 4, "int32"));
        scale_arrays.push_back(std::make_unique<Array>(parts[1], "scale mean", false, 1, "(outputs,)", "f", 4, "float32"));
        scale_arrays.push_back(std::make_unique<Array>(parts[2], "scale inv_std", false, 1, "(outputs,)", "f", 4, "float32"));
        const std::int64_t n_out = scale_arrays[0]->dim(0);
        if (n_out < 1 || n_out > fk::kNumFeatures) fail("scale index must name 1.." + std::to_string(fk::kNumFeatures) + " features, got " + std::to_string(n_out));
        require_shape(*scale_arrays[1], {n_out}, "one mean per output");
        require_shape(*scale_arrays[2], {n_out}, "one inv_std per output");
        const auto* index = static_cast<const std::int32_t*>(scale_arrays[0]->ptr());
        for (std::int64_t j = 0; j < n_out; ++j) {
            if (index[j] < 0 || index[j] >= fk::kNumFeatures) {
                fail("scale index[" + std::to_string(j) + "] = " + std::to_string(index[j]) + " is not a feature index in [0, " + std::to_string(fk::kNumFeatures) + ")");
            }
        }
        const double clip = parts[3].cast<double>();
        if (!(clip > 0) || !std::isfinite(clip)) fail("scale clip must be a finite number > 0, got " + std::to_string(clip));
        sc = fk::Scale{index, static_cast<const float*>(scale_arrays[1]->ptr()),
                       static_cast<const float*>(scale_arrays[2]->ptr()), static_cast<float>(clip), static_cast<int>(n_out)};
    }
    const Array vo(out, "out", true, 3, "(symbols, minutes, features)", "f", 4, "float32");
    require_shape(vo, {g.S, g.W - start, sc.n_out}, "symbols, minutes start..W-1, features (or scaled outputs)");
    for (const View* w : {&vi, &vf, &vo}) {
        for (const auto& c : cols) require_disjoint(*w, *c);
        for (const auto& a : scale_arrays) require_disjoint(*w, *a);
        require_disjoint(*w, vn);
    }
    require_disjoint(vi, vf);
    require_disjoint(vi, vo);
    require_disjoint(vf, vo);
    const auto* ip = static_cast<std::int32_t*>(vi.ptr());
    const std::int64_t lo = std::max<std::int64_t>(0, std::min(done - 1, start - fk::kLookback));
    if (done > 0) require_state_indices(ip, g.S, N, lo, done);
    const fk::State st{static_cast<std::int32_t*>(vi.ptr()), static_cast<double*>(vf.ptr()), N};
    const fk::Request req{done, start, n_minutes, static_cast<const double*>(vn.ptr()),
                          static_cast<float*>(vo.ptr()), threads, sc};
    py::gil_scoped_release nogil;
    fk::compute_features(g, st, req);
}

py::tuple name_tuple(const char* const* names, int n) {
    py::tuple t(n);
    for (int i = 0; i < n; ++i) t[static_cast<std::size_t>(i)] = py::str(names[i]);
    return t;
}

}  // namespace

PYBIND11_MODULE(_kernels, mod) {
    mod.doc() = "C++ kernels: windowing (use tthf.engine.windows) and features (use tthf.engine.features.formulas).";
    usage_error = py::object(py::module_::import("tthf.errors").attr("UsageError")).release();

    using namespace pybind11::literals;
    mod.def("count_windows", &count_windows, "mask"_a, "seq_len"_a, "stride"_a,
            "Number of valid windows of a (S, M) bool mask.");
    mod.def("window_positions", &window_positions, "mask"_a, "seq_len"_a, "stride"_a,
            "(sym_idx, minute_idx) int32 arrays of every valid window, in cursor order.");
    mod.def("cut_windows", &cut_windows, "features"_a, "mask"_a, "out"_a, "seq_len"_a, "stride"_a,
            "start"_a, "sym_out"_a, "minute_out"_a, "threads"_a, "nontemporal"_a = py::none(),
            "Fill out with the valid windows from ordinal start on; returns (n, next_start).");
    mod.def("gather_windows", &gather_windows, "features"_a, "sym_idx"_a, "minute_idx"_a, "out"_a,
            "seq_len"_a, "threads"_a, "nontemporal"_a = py::none(),
            "Fill out[:n] with the windows ending at (sym_idx[i], minute_idx[i]); returns n.");
    mod.def("simd_available", &tthf::simd_available,
            "Whether the AVX2 + F16C copy path is in use on this CPU.");
    mod.def("compute_features", &compute_features, "columns"_a, "ints"_a, "floats"_a, "done"_a, "start"_a,
            "n_minutes"_a, "neutral"_a, "names"_a, "out"_a, "threads"_a = 1, "scale"_a = py::none(),
            "Bring the state's minutes done..W-1 up to date and write the features of minutes start..W-1\n"
            "(scaled into the run's order when scale = (index, mean, inv_std, clip) is given).");
    mod.def("vector_math", &fk::vector_math,
            "Whether the features' logs run through glibc's AVX2 vector math (else scalar libm).");
    mod.attr("FEATURE_NAMES") = name_tuple(fk::kFeatureNames, fk::kNumFeatures);
    mod.attr("FEATURE_COLUMNS") = name_tuple(fk::kColumnNames, fk::N_COLUMNS);
    mod.attr("FEATURE_LOOKBACK") = fk::kLookback;
    mod.attr("STATE_FIELDS") = py::make_tuple(static_cast<int>(fk::N_INT_FIELDS), static_cast<int>(fk::N_FLOAT_FIELDS));
    mod.def("half_bits", [](std::uint32_t f) { return tthf::float_to_half_bits(f); }, "bits"_a,
            "float32 bits -> float16 bits, as numpy's astype(float16) (for tests).");
}
