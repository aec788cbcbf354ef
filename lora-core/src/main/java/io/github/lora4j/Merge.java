package io.github.lora4j;

import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * Folding an adapter into {@code W} and taking it out again: {@code W += s·B·A} and {@code W -= s·B·A} in W's layout,
 * the {@link MergeMode#FAST} way (one gemm accumulated in place) or the {@link MergeMode#EXACT} way
 * ({@link ExactMerge}, bit-exact unmerge). Each layer holds one instance: the one {@link Merged} record of its
 * current merge, and the refusals that depend on it. Guarded by the layer's lock.
 */
final class Merge {

    /** The adapter inside W and how it got there, or null when nothing is merged. */
    private Merged merged;
    /** W's memory in the process-wide registry while merged, so that no other layer merges into it too. */
    private MergedWeights.Claim claim;

    /** The current merge, or null. */
    Merged current() {
        return merged;
    }

    /**
     * Merges the effective adapter of {@code adapters} into {@code weight}, refusing as {@link #checkCanMerge} and while
     * another layer has an adapter merged into memory {@code weight} shares ({@link MergedWeights}, which names that
     * layer by its {@code holder} text), and drops the pending training forward.
     */
    void mergeEffective(INDArray weight, WeightLayout layout, double maxAbsWeight, AdapterSet adapters, MergeMode mode,
                        TrainingCache cache, String holder) {
        checkCanMerge(merged, adapters);
        MergedWeights.Claim c = MergedWeights.claim(weight, this, holder + " with adapter '"
                + adapters.effective().name() + "'");
        try {
            merged = merge(weight, layout, maxAbsWeight, adapters.effective(), mode);
        } catch (RuntimeException e) {
            c.release();
            throw e;
        }
        claim = c;
        cache.drop();
    }

    /** Takes the current merge out of {@code weight} (refused when nothing is merged); drops the training forward. */
    void unmergeCurrent(INDArray weight, WeightLayout layout, TrainingCache cache) {
        unmerge(weight, layout, merged);
        forget();
        cache.drop();
    }

    /**
     * Forgets the current merge without undoing it: {@code W} keeps the update for good, the exact-unmerge record is
     * dropped and W's memory is released in the registry. Nothing happens when nothing is merged.
     */
    void forget() {
        merged = null;
        if (claim != null) {
            claim.release();
            claim = null;
        }
    }

    /** Refuses {@code action} while any adapter is merged. */
    void refuseWhileMerged(String action) {
        if (merged != null) {
            throw Checks.mergedRefusal(action, merged.adapter().name());
        }
    }

    /** Refuses {@code action} on {@code adapter} while that adapter (not another) is merged. */
    void refuseIfMerged(LoraAdapter adapter, String action) {
        if (merged != null && merged.adapter() == adapter) {
            throw Checks.mergedRefusal(action, adapter.name());
        }
    }

    /** Refuses {@code action} on {@code adapter} while another adapter is merged. */
    void refuseIfOtherMerged(LoraAdapter adapter, String action) {
        if (merged != null && merged.adapter() != adapter) {
            throw Checks.mergedRefusal(action, merged.adapter().name());
        }
    }

    /** Bytes the current exact merge keeps for its unmerge; 0 after a fast merge or when not merged. */
    long exactBytes() {
        return merged == null || merged.record() == null ? 0L : merged.record().bytes();
    }

    /** {@code "no"}, or the merged adapter's name and mode, for {@code toString}. */
    String describe() {
        return merged == null ? "no" : merged.adapter().name() + " (" + merged.mode() + ")";
    }

    /** Which adapter is inside W, how, and what an exact unmerge needs ({@code record} null after a fast merge). */
    record Merged(LoraAdapter adapter, MergeMode mode, MergeRecord record) {
    }

    /** Refuses a merge while one is in place, adapters are disabled, or none is active. */
    static void checkCanMerge(Merged merged, AdapterSet adapters) {
        if (merged != null) {
            throw new IllegalStateException("adapter '" + merged.adapter().name()
                    + "' is already merged into W; unmerge() before merging again");
        }
        if (!adapters.enabled()) {
            throw new IllegalStateException("cannot merge while adapters are disabled; enableAdapters() first");
        }
        if (adapters.active() == null) {
            throw new IllegalStateException("no active adapter to merge; adapters: " + adapters.names());
        }
    }

    /**
     * Merges {@code adapter} into {@code weight} in {@code mode}. A DoRA adapter always merges EXACT. FAST falls back to
     * EXACT (and says so in the returned record's mode) when a fast merge could overflow, or when W's memory is laid
     * out so that no gemm can accumulate into it in place (a non-contiguous view).
     *
     * @throws IllegalStateException if A or B is not finite, or the result would not be; W is then unchanged
     */
    static Merged merge(INDArray weight, WeightLayout layout, double maxAbsWeight, LoraAdapter adapter, MergeMode mode) {
        double maxA = Checks.maxAbsOrNaN(adapter.a());
        double maxB = Checks.maxAbsOrNaN(adapter.b());
        if (Double.isNaN(maxA) || Double.isNaN(maxB)) {
            throw new IllegalStateException("cannot merge adapter '" + adapter.name()
                    + "': its A or B holds NaN or infinity (diverged training?); W left unchanged");
        }
        double s = adapter.scaling();
        if (adapter.isDora()) {
            // DoRA merges the exact way whatever the mode: W = c ⊙ (W + s·B·A), c = m / ‖W + s·B·A‖_row.
            MergeRecord record = ExactMerge.merge(weight, layout == WeightLayout.IN_OUT, adapter.a(), adapter.b(), s,
                    doraFactors(weight, layout, adapter));
            return new Merged(adapter, MergeMode.EXACT, record);
        }
        if (mode == MergeMode.FAST && fastMergeCannotOverflow(weight, maxAbsWeight, adapter, maxA, maxB)
                && Kernels.accumulatesInPlace(weight)) {
            deltaInto(weight, layout, adapter, s);
            return new Merged(adapter, MergeMode.FAST, null);
        }
        MergeRecord record = ExactMerge.merge(weight, layout == WeightLayout.IN_OUT, adapter.a(), adapter.b(), s);
        return new Merged(adapter, MergeMode.EXACT, record);
    }

    /** Reverses {@code merged}: bitwise after an exact merge, to an ulp of the merged values after a fast one. */
    static void unmerge(INDArray weight, WeightLayout layout, Merged merged) {
        if (merged == null) {
            throw new IllegalStateException("no adapter is merged into W; nothing to unmerge");
        }
        LoraAdapter adapter = merged.adapter();
        double s = adapter.scaling();
        if (merged.record() != null) {
            ExactMerge.unmerge(merged.record());
        } else {
            deltaInto(weight, layout, adapter, -s);
        }
    }

    /**
     * A new {@code W + s·B·A} in W's layout (a copy of W for a null adapter), bit for bit what an EXACT merge would
     * write into W: it runs that merge's Java pass on the copy (a gemm rounds differently, by an ulp here and there).
     */
    static INDArray mergedWeight(INDArray weight, WeightLayout layout, LoraAdapter adapter) {
        INDArray w = weight.dup('c');
        if (adapter != null) {
            ExactMerge.merge(w, layout == WeightLayout.IN_OUT, adapter.a(), adapter.b(), adapter.scaling(),
                    adapter.isDora() ? doraFactors(weight, layout, adapter) : null);
        }
        return w;
    }

    /**
     * DoRA's merge factors {@code c = m / ‖W + s·B·A‖_row} over the unmerged {@code weight}.
     *
     * @throws IllegalStateException if a norm is zero or a factor not finite (W is not touched)
     */
    private static double[] doraFactors(INDArray weight, WeightLayout layout, LoraAdapter adapter) {
        Dora dora = adapter.dora();
        double[] c = dora.factors(dora.norms(weight, layout, adapter));
        for (int j = 0; j < c.length; j++) {
            if (!Double.isFinite(c[j])) {
                throw new IllegalStateException("cannot merge DoRA adapter '" + adapter.name() + "': the factor m / ‖W + "
                        + "s·B·A‖ of output row " + j + " is " + c[j] + "; expected a finite value; W left unchanged");
            }
        }
        return c;
    }

    /** {@code target += scale·B·A} in W's layout: one gemm, accumulated in place, no {@code [out, in]} temporary. */
    static void deltaInto(INDArray target, WeightLayout layout, LoraAdapter adapter, double scale) {
        if (layout == WeightLayout.OUT_IN) {
            Kernels.gemm(adapter.b(), adapter.a(), target, false, false, scale, 1.0);   // W += s B A       [out, in]
        } else {
            Kernels.gemm(adapter.a(), adapter.b(), target, true, true, scale, 1.0);     // W += s A^T B^T   [in, out]
        }
    }

    /** |W + s·B·A| <= max|W| + s·r·max|A|·max|B|: below the type's largest value, no element can overflow. */
    private static boolean fastMergeCannotOverflow(INDArray weight, double maxAbsWeight, LoraAdapter adapter,
                                                   double maxA, double maxB) {
        double bound = maxAbsWeight + Math.abs(adapter.scaling()) * adapter.rank() * maxA * maxB;
        double limit = weight.dataType() == DataType.DOUBLE ? Double.MAX_VALUE : Float.MAX_VALUE;
        return bound < limit * 0.5;
    }
}
