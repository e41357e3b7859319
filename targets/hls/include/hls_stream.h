// hls_stream.h — mambaflow's C-simulation model of Vitis HLS hls::stream<T> (UG1399).
// Header-only, C++17, single-threaded csim (dataflow processes run one after another).
//
// Why the project keeps its own: no package ships a csim hls::stream that checks FIFO
// depths. The copy in the hls4ml wheel (next to AMD's ap_types, which csim does use)
// has no depth at all (full() is always false) and returns a default value on a read
// while empty; Vitis' own needs a Vitis install. csim copies this file next to AMD's
// ap_*.h (targets/hls/cxx.py, csim_include_dir).
//
// Semantics that differ from Vitis csim on purpose, so that a test fails loudly:
//   * reading an empty stream is a deadlock in hardware; Vitis csim prints a warning
//     and returns garbage. Here it prints "hls::stream '<name>': read while empty" on
//     stderr and calls std::abort().
//   * a depth can be declared (mambaflow-only set_depth(D), or hls::stream<T, D>); the
//     emitter's `#pragma HLS stream variable=v depth=D` is invisible to g++, so the csim
//     harness mirrors it with set_depth. Writing a (D+1)-th element then prints
//     "hls::stream '<name>': write beyond depth D" and aborts: in hardware a sequential
//     producer would stall on that FIFO forever. Without a depth the stream is unbounded.
//   * max_occupancy() (mambaflow-only) reports the largest size seen, to size FIFOs.
// A stream still holding data when destroyed prints a warning (as Vitis does).
#ifndef MAMBAFLOW_HLS_STREAM_SHIM_H
#define MAMBAFLOW_HLS_STREAM_SHIM_H

#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <string>

namespace hls {

namespace stream_shim {
inline int next_id() {
  static int id = 0;
  return id++;
}
}  // namespace stream_shim

template <typename T, int DEPTH = 0> class stream {
 public:
  stream() : name_("hls::stream." + std::to_string(stream_shim::next_id())), depth_(DEPTH) {}
  explicit stream(const char* name) : name_(name), depth_(DEPTH) {}
  stream(const stream&) = delete;  // a stream is a FIFO instance, never copied (as Vitis)
  stream& operator=(const stream&) = delete;
  ~stream() {
    if (!q_.empty())
      std::fprintf(stderr, "WARNING: hls::stream '%s' contains leftover data (%zu elements)\n",
                   name_.c_str(), q_.size());
  }

  void write(const T& v) {
    if (depth_ > 0 && q_.size() >= depth_) {
      std::fprintf(stderr,
                   "hls::stream '%s': write beyond depth %zu (the producer would stall "
                   "forever in hardware; raise the depth or reorder the dataflow)\n",
                   name_.c_str(), depth_);
      std::fflush(stderr);
      std::abort();
    }
    q_.push_back(v);
    if (q_.size() > max_occ_) max_occ_ = q_.size();
  }
  T read() {
    if (q_.empty()) {
      std::fprintf(stderr,
                   "hls::stream '%s': read while empty (deadlock in hardware: the "
                   "consumer runs before its producer wrote enough)\n",
                   name_.c_str());
      std::fflush(stderr);
      std::abort();
    }
    T v = q_.front();
    q_.pop_front();
    return v;
  }
  void read(T& v) { v = read(); }
  bool read_nb(T& v) {
    if (q_.empty()) return false;
    v = read();
    return true;
  }
  bool write_nb(const T& v) {
    if (full()) return false;
    write(v);
    return true;
  }
  void operator<<(const T& v) { write(v); }
  void operator>>(T& v) { read(v); }

  bool empty() const { return q_.empty(); }
  bool full() const { return depth_ > 0 && q_.size() >= depth_; }
  std::size_t size() const { return q_.size(); }

#ifndef __SYNTHESIS__
  // mambaflow-only API (mirrors `#pragma HLS stream depth=D`, and reports usage).
  void set_depth(std::size_t d) { depth_ = d; }
  std::size_t depth() const { return depth_; }
  std::size_t max_occupancy() const { return max_occ_; }
  const std::string& name() const { return name_; }
#endif

 private:
  std::deque<T> q_;
  std::string name_;
  std::size_t depth_;
  std::size_t max_occ_ = 0;
};

}  // namespace hls

#endif  // MAMBAFLOW_HLS_STREAM_SHIM_H
