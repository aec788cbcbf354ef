package io.github.lora4j;

/**
 * How {@link LoraLinear#merge(MergeMode)} folds an adapter into {@code W}, and so how exactly
 * {@link LoraLinear#unmerge()} can take it out again.
 */
public enum MergeMode {
    /**
     * {@code W += s·B·A}, remembering the few elements where {@code fl(fl(W + Δ) − Δ) != W}, so that
     * unmerge restores {@code W} bit for bit after any number of cycles. Costs one pass over {@code W}
     * in Java that computes {@code Δ = s·B·A} element by element ({@code r} multiply-adds each, no BLAS
     * call, so that merge and unmerge compute the same {@code Δ} bits on any BLAS), and a few bytes per
     * remembered element (typically a small fraction of {@code W}); no copy of {@code W} is kept. A
     * non-finite result is detected per element and rolled back exactly. The default.
     */
    EXACT,
    /**
     * One in-place gemm, {@code W += s·B·A}, and one for unmerge, {@code W −= s·B·A}: the cheapest
     * merge, but each cycle may move an element of {@code W} by a few ulps: at most {@code (r + 1)} ulps of
     * {@code |W_ij| + s·Σ_k |B_ik|·|A_kj|}, since a BLAS may accumulate the {@code r} products into {@code W}
     * itself (OpenBLAS's small-matrix kernels do), rounding once per product.
     * Use it to merge once for deployment. Overflow is ruled out by a bound checked before {@code W}
     * changes; when the bound cannot rule it out, the merge is done the {@link #EXACT} way.
     */
    FAST
}
