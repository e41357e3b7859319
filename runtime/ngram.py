"""A prompt-lookup (n-gram) drafter: no model, no state, drafts copied from the context.

Text repeats itself (names, code, the prompt's own phrases). `NgramDraft` matches the
last n tokens of the context (prompt + everything emitted, root included) against
earlier positions, longest n first and the most recent occurrence first, and proposes
what followed them. With one branch that is a chain (prompt lookup decoding); with
more, the continuations of several matches are merged into a small tree (a trie: common
prefixes shared), capped per depth by the tree shape's widths.

It plugs into speculative decoding in place of a draft backend; the tree shape gives
the depth (and the widths of a static tree):

    from mambaflow.runtime.ngram import NgramDraft
    g = speculative_generate(target, NgramDraft(max_n=3), prompt, 64, tree="chain:7")
    g = speculative_generate(target, NgramDraft(max_n=3, branches=3), prompt, 64, tree="3,1,1,1")

Its proposals are deterministic given the context, so greedy output is the target's
own and sampling acceptance keeps the target's distribution (they are fixed proposals,
`speculative.accept_sampling`). When nothing matches the tree is the root alone, and
the round emits the target's own next token, as plain decoding would.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import MambaflowError
from .trees import Chain, DraftTree, Static


@dataclass(frozen=True)
class NgramDraft:
    """max_n..min_n: the suffix lengths tried (longest first); branches: the number of
    distinct continuations merged into the tree (1: a chain)."""

    max_n: int = 3
    min_n: int = 1
    branches: int = 1
    name = "ngram"

    def __post_init__(self):
        if not (1 <= self.min_n <= self.max_n) or self.branches < 1:
            raise MambaflowError(f"an n-gram drafter needs 1 <= min_n <= max_n and branches >= 1, got {self}")

    def __str__(self) -> str:
        return f"ngram{self.max_n}" + (f"b{self.branches}" if self.branches > 1 else "")

    def continuations(self, context: list[int], length: int) -> list[list[int]]:
        """Up to `branches` distinct continuations (each at most `length` tokens) of the
        context's last n tokens, longest n first, then the most recent match first."""
        found: list[list[int]] = []
        L = len(context)
        for n in range(min(self.max_n, L - 1), self.min_n - 1, -1):
            key = context[L - n:]
            for i in range(L - n - 1, -1, -1):  # occurrences that end before the last token
                if context[i: i + n] == key:
                    cont = context[i + n: i + n + length]
                    if cont and cont not in found:
                        found.append(cont)
                        if len(found) == self.branches:
                            return found
        return found

    def draft_tree(self, context: list[int], shape, max_depth: int | None = None) -> DraftTree:
        """The tree under the root context[-1]: the continuations merged into a trie,
        at most widths[d] children per node at depth d and shape.nodes nodes in all,
        numbered breadth-first."""
        if not isinstance(shape, (Chain, Static)):
            raise MambaflowError(f"the n-gram drafter drafts chains and static trees (e.g. chain:7, 3,1,1), "
                                 f"not {shape}")
        widths = shape.widths[: shape.depth if max_depth is None else max(0, min(shape.depth, max_depth))]
        children: dict[int, list[int]] = {0: []}  # trie node -> child nodes, in insertion order
        token, depth, count = {0: context[-1]}, {0: 0}, 1
        for cont in self.continuations(context, len(widths)):
            node = 0
            for tok in cont:
                nxt = next((c for c in children[node] if token[c] == tok), None)
                if nxt is None:
                    if len(children[node]) >= widths[depth[node]] or count >= shape.nodes:
                        break
                    nxt, count = count, count + 1
                    children[node].append(nxt)
                    children[nxt], token[nxt], depth[nxt] = [], tok, depth[node] + 1
                node = nxt
        order, parents, at = [0], [-1], {0: 0}  # breadth-first renumbering
        for node in order:
            for c in children[node]:
                at[c] = len(order)
                order.append(c)
                parents.append(at[node])
        return DraftTree([token[n] for n in order], parents, [depth[n] for n in order], [None] * len(order), 0, 0)
