// mambaflow: the draft -> verify -> accept loop of greedy speculative decoding (SpecMamba),
// in plain C++17 without XRT. The XRT host program of a speculative project and its C
// simulation on the CPU (the same host.cpp, built with -DMF_HOST_CSIM) run this code;
// tests/test_build_speculative.py checks it against the Python runtime it mirrors:
//   runtime/trees.py        draft trees (breadth-first, children together, in draft order)
//   runtime/speculative.py  accept_greedy and the loop of speculative_generate
//   runtime/backtrack.py    the state after a node (TreeCache.conv_at, every layer checkpointing)
//   models/common.py        tree_conv_windows
// Tensors are row-major float arrays; a state is (layers, conv_dim, K) + (layers, ssm).
#ifndef MAMBAFLOW_SPEC_LOOP_H
#define MAMBAFLOW_SPEC_LOOP_H

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <functional>
#include <map>
#include <numeric>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace mfspec {

// One model's decode state, batch 1: conv (layers, conv_dim, conv_k), ssm (layers, ssm).
struct StateShape {
  int layers = 0, conv_dim = 0, conv_k = 0;
  int ssm = 0;  // values of one layer's SSM state
  std::size_t conv_size() const { return static_cast<std::size_t>(layers) * conv_dim * conv_k; }
  std::size_t ssm_size() const { return static_cast<std::size_t>(layers) * ssm; }
};

struct State {
  std::vector<float> conv, ssm;
  static State zeros(const StateShape& s) { return {std::vector<float>(s.conv_size()), std::vector<float>(s.ssm_size())}; }
};

struct Config {
  int vocab = 0;        // logits per node
  int vocab_limit = 0;  // ids at or above it are never drafted or emitted (Sampling.vocab_limit)
  int nodes = 0;        // T, the nodes of one verify pass
  int fifo_depth = 0;   // slots of the verify kernel's FIFO tree buffer
  std::vector<int> widths;  // children per node at each depth (a chain of k: k ones)
  StateShape target, draft;
};

// The first index of the largest of x[0..n) (torch.argmax's tie rule).
inline int argmax(const float* x, int n) {
  int best = 0;
  for (int i = 1; i < n; ++i)
    if (x[i] > x[best]) best = i;
  return best;
}

// The indices of the k largest of x[0..n), largest first; equal values in index order.
inline std::vector<int> top_k(const float* x, int n, int k) {
  std::vector<int> idx(static_cast<std::size_t>(n));
  std::iota(idx.begin(), idx.end(), 0);
  k = std::min(k, n);
  std::partial_sort(idx.begin(), idx.begin() + k, idx.end(),
                    [x](int a, int b) { return x[a] > x[b] || (x[a] == x[b] && a < b); });
  idx.resize(static_cast<std::size_t>(k));
  return idx;
}

// A token tree in breadth-first order: node 0 is the root (the pending token), parents[0] = -1.
struct Tree {
  std::vector<int64_t> tokens, parents;
  int size() const { return static_cast<int>(tokens.size()); }
  int add(int64_t token, int64_t parent) {
    tokens.push_back(token);
    parents.push_back(parent);
    return size() - 1;
  }
  // Pad to T nodes with children of the committed state (DraftTree.padded): they change
  // nothing else and keep one verify kernel for every tree of the shape.
  void pad(int T) {
    if (size() > T) throw std::runtime_error("a tree of " + std::to_string(size()) + " nodes does not fit a verify pass of " + std::to_string(T));
    tokens.resize(static_cast<std::size_t>(T), 0);
    parents.resize(static_cast<std::size_t>(T), -1);
  }
};

// Conv windows (T, K) of a tree (models.common.tree_conv_windows): row i lists node i's K-1
// nearest ancestors, oldest first, then i itself; index j < K-1 is committed conv-state
// column j+1, index K-1+t is node t's pre-conv input.
inline std::vector<int64_t> conv_windows(const std::vector<int64_t>& parents, int K) {
  const std::size_t T = parents.size();
  std::vector<int64_t> w(T * K);
  std::vector<int64_t> root(static_cast<std::size_t>(K));
  for (int j = 0; j < K; ++j) root[j] = j - 1;  // the committed state's own window
  for (std::size_t i = 0; i < T; ++i) {
    const int64_t p = parents[i];
    if (p >= static_cast<int64_t>(i)) throw std::runtime_error("tree parents must come before their children");
    const int64_t* above = p < 0 ? root.data() : &w[static_cast<std::size_t>(p) * K];
    for (int j = 0; j + 1 < K; ++j) w[i * K + j] = above[j + 1];
    w[i * K + K - 1] = K - 1 + static_cast<int64_t>(i);
  }
  return w;
}

// The smallest FIFO tree buffer a tree fits (runtime.backtrack.fifo_need).
inline int fifo_need(const std::vector<int64_t>& parents) {
  int need = 1;
  for (std::size_t t = 0; t < parents.size(); ++t)
    if (parents[t] >= 0) need = std::max(need, static_cast<int>(static_cast<int64_t>(t) - parents[t] + 1));
  return need;
}

struct Acceptance {
  std::vector<int> path;  // accepted nodes, root first
  int64_t bonus = 0;      // the target's argmax after the path: the next root
};

// The longest root path whose every token is the target's argmax at its parent
// (runtime.speculative.accept_greedy); nodes >= n are padding. logits: (T, vocab).
inline Acceptance accept_greedy(const Tree& tree, int n, const float* logits, int vocab, int limit) {
  Acceptance a;
  int node = 0;
  a.path.push_back(0);
  for (;;) {
    const int64_t best = argmax(logits + static_cast<std::size_t>(node) * vocab, limit);
    int next = -1;
    for (int c = node + 1; c < n; ++c)  // children in draft (index) order
      if (tree.parents[c] == node && tree.tokens[c] == best) {
        next = c;
        break;
      }
    if (next < 0) {
      a.bonus = best;
      return a;
    }
    a.path.push_back(next);
    node = next;
  }
}

// The target's state after tree node `node` (runtime.backtrack.state_at, every layer
// checkpointing): the conv state is the node's window over [committed columns 1..K-1,
// node inputs] and the SSM state is the node's own, from the verify kernel's outputs
// conv_in (layers, T, conv_dim) and node_states (layers, T, ssm).
inline State commit(const StateShape& s, const State& base, const std::vector<int64_t>& windows, int T,
                    const float* conv_in, const float* node_states, int node) {
  State out = State::zeros(s);
  const int K = s.conv_k, C = s.conv_dim;
  const int64_t* w = &windows[static_cast<std::size_t>(node) * K];
  for (int l = 0; l < s.layers; ++l)
    for (int c = 0; c < C; ++c)
      for (int k = 0; k < K; ++k) {
        const std::size_t at = (static_cast<std::size_t>(l) * C + c) * K + k;
        out.conv[at] = w[k] < K - 1 ? base.conv[(static_cast<std::size_t>(l) * C + c) * K + w[k] + 1]
                                    : conv_in[(static_cast<std::size_t>(l) * T + (w[k] - (K - 1))) * C + c];
      }
  for (int l = 0; l < s.layers; ++l)
    std::memcpy(&out.ssm[static_cast<std::size_t>(l) * s.ssm],
                node_states + (static_cast<std::size_t>(l) * T + node) * s.ssm, sizeof(float) * s.ssm);
  return out;
}

// The two kernels, as the loop calls them.
struct Kernels {
  // the draft's decode: one token from `in` -> logits (vocab) and the next state `out`
  std::function<void(int64_t token, const State& in, float* logits, State& out)> draft;
  // the target's verify of a tree padded to T nodes from the committed state `base` ->
  // logits (T, vocab), conv_in (layers, T, conv_dim), node_states (layers, T, ssm)
  std::function<void(const Tree& tree, const std::vector<int64_t>& windows, const State& base, float* logits,
                     float* conv_in, float* node_states)>
      verify;
};

struct Run {
  std::vector<int64_t> tokens;  // generated tokens; the first follows the prompt
  std::vector<int> accepted;    // draft tokens accepted per verify pass
  int draft_calls = 0, verify_calls = 0;
};

class Loop {
 public:
  Loop(Config cfg, Kernels k)
      : cfg_(std::move(cfg)), k_(std::move(k)),
        logits_(static_cast<std::size_t>(cfg_.nodes) * cfg_.vocab),
        conv_in_(static_cast<std::size_t>(cfg_.target.layers) * cfg_.nodes * cfg_.target.conv_dim),
        states_(static_cast<std::size_t>(cfg_.target.layers) * cfg_.nodes * cfg_.target.ssm) {
    if (cfg_.nodes < 2 || cfg_.fifo_depth < 2 || cfg_.vocab_limit < 1 || cfg_.vocab_limit > cfg_.vocab)
      throw std::runtime_error("speculative loop: bad configuration (T >= 2, FIFO >= 2, 1 <= vocab_limit <= vocab)");
  }

  // Verify `tree` (padded here) from `base`; the outputs stay in logits_, conv_in_, states_.
  std::vector<int64_t> verify(Tree& tree, const State& base) {
    tree.pad(cfg_.nodes);
    if (fifo_need(tree.parents) > cfg_.fifo_depth)
      throw std::runtime_error("a tree needs a FIFO tree buffer of " + std::to_string(fifo_need(tree.parents)) +
                               " slots, the verify kernel has " + std::to_string(cfg_.fifo_depth));
    std::vector<int64_t> windows = conv_windows(tree.parents, cfg_.target.conv_k);
    k_.verify(tree, windows, base, logits_.data(), conv_in_.data(), states_.data());
    ++run_.verify_calls;
    return windows;
  }

  // The target's state after `tokens` from `state` through verify passes over chains of
  // up to T tokens (a chain is a tree; the rest of a pass is padding); `last` gets the
  // logits after the last token.
  State target_prefill(const std::vector<int64_t>& tokens, State state, std::vector<float>& last) {
    for (std::size_t pos = 0; pos < tokens.size();) {
      const int n = static_cast<int>(std::min<std::size_t>(cfg_.nodes, tokens.size() - pos));
      Tree chain;
      for (int i = 0; i < n; ++i) chain.add(tokens[pos + i], i - 1);
      const std::vector<int64_t> windows = verify(chain, state);
      state = commit(cfg_.target, state, windows, cfg_.nodes, conv_in_.data(), states_.data(), n - 1);
      last.assign(logits_.begin() + static_cast<std::ptrdiff_t>(n - 1) * cfg_.vocab,
                  logits_.begin() + static_cast<std::ptrdiff_t>(n) * cfg_.vocab);
      pos += n;
    }
    return state;
  }

  State draft_run(const std::vector<int64_t>& tokens, State state, std::vector<float>& last) {
    last.assign(static_cast<std::size_t>(cfg_.vocab), 0.0f);
    for (int64_t t : tokens) {
      State next = State::zeros(cfg_.draft);
      k_.draft(t, state, last.data(), next);
      ++run_.draft_calls;
      state = std::move(next);
    }
    return state;
  }

  // Grow the draft tree under `root` (runtime.trees.draft_tree, greedy: a node's children
  // are the draft's top widths[d] tokens; only nodes whose children are wanted are decoded),
  // at most `depth_cap` deep. `states` gets the draft state after every decoded node.
  Tree draft_tree(int64_t root, const std::vector<float>& root_logits, const State& root_state, int depth_cap,
                  std::map<int, State>& states) {
    Tree tree;
    tree.add(root, -1);
    states.clear();
    states.emplace(0, root_state);
    std::map<int, std::vector<float>> logits{{0, root_logits}};
    const int depth = std::min<int>(depth_cap, static_cast<int>(cfg_.widths.size()));
    std::vector<int> level{0};
    for (int d = 0; d < depth; ++d) {
      std::vector<int> next;
      for (int n : level) {
        const std::vector<int> kids = top_k(logits[n].data(), cfg_.vocab_limit, cfg_.widths[d]);
        logits.erase(n);
        for (int tok : kids) {
          const int c = tree.add(tok, n);
          next.push_back(c);
          if (d + 1 < depth) {  // its children are wanted: run the draft on it
            std::vector<float> lg(static_cast<std::size_t>(cfg_.vocab));
            State st = State::zeros(cfg_.draft);
            k_.draft(tok, states.at(n), lg.data(), st);
            ++run_.draft_calls;
            logits.emplace(c, std::move(lg));
            states.emplace(c, std::move(st));
          }
        }
      }
      level = std::move(next);
    }
    return tree;
  }

  // Greedy speculative decoding of n_tokens after `prompt` (runtime.speculative_generate
  // with backtrack="checkpoint": the draft keeps every decoded node's state, the target
  // commits the accepted node's state from the verify kernel's per-node outputs).
  Run generate(const std::vector<int64_t>& prompt, int n_tokens) {
    if (prompt.empty()) throw std::runtime_error("the prompt is empty: give at least one token");
    if (n_tokens < 1) throw std::runtime_error("n_tokens must be >= 1");
    run_ = Run();
    std::vector<float> t_last, d_last;
    State t_state = target_prefill(prompt, State::zeros(cfg_.target), t_last);
    State d_state = draft_run(prompt, State::zeros(cfg_.draft), d_last);
    run_.tokens.push_back(argmax(t_last.data(), cfg_.vocab_limit));
    std::vector<int64_t> d_pending{run_.tokens.back()};  // tokens the draft has not run yet
    std::map<int, State> states;
    while (static_cast<int>(run_.tokens.size()) < n_tokens) {
      const int remaining = n_tokens - static_cast<int>(run_.tokens.size());
      const int64_t root = run_.tokens.back();
      std::vector<float> root_logits;
      const State root_state = draft_run(d_pending, d_state, root_logits);  // the last pending token is the root
      Tree tree = draft_tree(root, root_logits, root_state, remaining - 1, states);
      const int n = tree.size();
      const std::vector<int64_t> windows = verify(tree, t_state);
      const Acceptance a = accept_greedy(tree, n, logits_.data(), cfg_.vocab, cfg_.vocab_limit);
      t_state = commit(cfg_.target, t_state, windows, cfg_.nodes, conv_in_.data(), states_.data(), a.path.back());
      // the draft resumes from its deepest decoded node on the path and first runs the
      // accepted tokens below it, then the bonus token
      std::size_t keep = 0;
      for (std::size_t i = 0; i < a.path.size(); ++i)
        if (states.count(a.path[i])) keep = i;
      d_state = states.at(a.path[keep]);
      d_pending.clear();
      for (std::size_t i = keep + 1; i < a.path.size(); ++i) d_pending.push_back(tree.tokens[a.path[i]]);
      d_pending.push_back(a.bonus);
      for (std::size_t i = 1; i < a.path.size(); ++i) run_.tokens.push_back(tree.tokens[a.path[i]]);
      run_.tokens.push_back(a.bonus);
      run_.accepted.push_back(static_cast<int>(a.path.size()) - 1);
    }
    run_.tokens.resize(static_cast<std::size_t>(n_tokens));
    return run_;
  }

  const Config& config() const { return cfg_; }

 private:
  Config cfg_;
  Kernels k_;
  std::vector<float> logits_, conv_in_, states_;  // the last verify pass's outputs
  Run run_;
};

}  // namespace mfspec

#endif  // MAMBAFLOW_SPEC_LOOP_H
