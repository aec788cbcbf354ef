package io.github.lora4j.train;

import io.github.lora4j.LoraAdapter;
import io.github.lora4j.LoraTrainable;
import java.util.HashMap;
import java.util.Map;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.indexing.NDArrayIndex;
import org.nd4j.linalg.learning.GradientUpdater;
import org.nd4j.linalg.learning.config.AdaBelief;
import org.nd4j.linalg.learning.config.IUpdater;

/**
 * Optimizer state of one adapter: an updater for A, one for B and, for DoRA, one for the magnitude m, over slices of
 * one flat row {@code [A's | B's | m's]}, plus the scratch of the checked step (the steps, a backup of the flat row).
 */
final class AdapterState {
    final LoraTrainable layer;
    final GradientUpdater<?> forA;
    final GradientUpdater<?> forB;
    /** DoRA's magnitude updater, or null for plain LoRA. */
    final GradientUpdater<?> forM;
    /** {@code [1, sizeA + sizeB + sizeM]}, or null for stateless updaters. */
    final INDArray flat;
    final long sizeA;
    final long sizeAB;
    final long size;
    /**
     * Steps this adapter has taken: the iteration its updater sees (Adam's bias correction, iteration schedules), as
     * PyTorch keeps a {@code step} per parameter. An adapter trained alone counts every step; trained in mixed batches,
     * only the steps of the batches it had rows in.
     */
    int steps;
    INDArray backup;
    INDArray stepA;
    INDArray stepB;
    INDArray stepM;

    private AdapterState(LoraTrainable layer, GradientUpdater<?> forA, GradientUpdater<?> forB, GradientUpdater<?> forM,
                         INDArray flat, long sizeA, long sizeB, long sizeM) {
        this.layer = layer;
        this.forA = forA;
        this.forB = forB;
        this.forM = forM;
        this.flat = flat;
        this.sizeA = sizeA;
        this.sizeAB = sizeA + sizeB;
        this.size = sizeA + sizeB + sizeM;
    }

    void ensureScratch(LoraAdapter adapter) {
        if (stepA == null) {
            stepA = Nd4j.createUninitialized(adapter.gradA().dataType(), adapter.gradA().shape());
            stepB = Nd4j.createUninitialized(adapter.gradB().dataType(), adapter.gradB().shape());
            if (forM != null) {
                stepM = Nd4j.createUninitialized(adapter.gradMagnitude().dataType(), adapter.gradMagnitude().shape());
            }
        }
    }

    void backUp() {
        if (flat != null) {
            if (backup == null) {
                backup = Nd4j.createUninitialized(flat.dataType(), flat.shape());
            }
            StateArrays.copy(flat, backup);
        }
    }

    void restore() {
        if (flat != null) {
            StateArrays.copy(backup, flat);
        }
    }

    /** Copy of A's part of the state, 1-D {@code [sizeA]}. */
    INDArray stateA() {
        return flat.get(NDArrayIndex.point(0), NDArrayIndex.interval(0, sizeA)).dup('c').reshape(sizeA);
    }

    /** Copy of B's part of the state, 1-D {@code [sizeB]}. */
    INDArray stateB() {
        return flat.get(NDArrayIndex.point(0), NDArrayIndex.interval(sizeA, sizeAB)).dup('c').reshape(sizeAB - sizeA);
    }

    /** Copy of DoRA's magnitude part of the state, 1-D {@code [sizeM]}; null for plain LoRA. */
    INDArray stateM() {
        return forM == null ? null
                : flat.get(NDArrayIndex.point(0), NDArrayIndex.interval(sizeAB, size)).dup('c').reshape(size - sizeAB);
    }

    /** Overwrites the state with saved values (lengths checked by the reader; {@code m} null for plain LoRA). */
    void load(INDArray a, INDArray b, INDArray m) {
        INDArray all = m == null ? Nd4j.concat(0, a, b) : Nd4j.concat(0, a, b, m);
        StateArrays.copy(all.reshape(1, size), flat);
    }

    /** Fresh (zero) state for {@code adapter} of {@code layer} under {@code updater}. */
    static AdapterState create(IUpdater updater, LoraTrainable layer, LoraAdapter adapter) {
        INDArray gradA = adapter.gradA();
        INDArray gradB = adapter.gradB();
        INDArray gradM = adapter.gradMagnitude();
        requireContiguous(adapter, gradA, "gradA");
        requireContiguous(adapter, gradB, "gradB");
        if (gradM != null) {
            requireContiguous(adapter, gradM, "gradMagnitude");
        }
        long sa = updater.stateSize(gradA.length());
        long sb = updater.stateSize(gradB.length());
        long sm = gradM == null ? 0 : updater.stateSize(gradM.length());
        if (sa + sb + sm == 0) {
            // Stateless updaters (Sgd, NoOp) refuse a view array.
            return new AdapterState(layer, updater.instantiate((INDArray) null, true),
                    updater.instantiate((INDArray) null, true),
                    gradM == null ? null : updater.instantiate((INDArray) null, true), null, 0, 0, 0);
        }
        // One flat c-order row per adapter; A's, B's (and m's) updaters each own a contiguous slice of it.
        INDArray flat = Nd4j.zeros(gradA.dataType(), 1, sa + sb + sm);
        INDArray viewA = flat.get(NDArrayIndex.point(0), NDArrayIndex.interval(0, sa)).reshape(1, sa);
        INDArray viewB = flat.get(NDArrayIndex.point(0), NDArrayIndex.interval(sa, sa + sb)).reshape(1, sb);
        GradientUpdater<?> forM = null;
        if (gradM != null) {
            INDArray viewM = flat.get(NDArrayIndex.point(0), NDArrayIndex.interval(sa + sb, sa + sb + sm)).reshape(1, sm);
            forM = instantiate(updater, viewM);
        }
        return new AdapterState(layer, instantiate(updater, viewA), instantiate(updater, viewB), forM, flat, sa, sb,
                sm);
    }

    /** An updater whose state lives in {@code view} ({@code [1, stateSize]}, zeros). */
    private static GradientUpdater<?> instantiate(IUpdater updater, INDArray view) {
        if (updater instanceof AdaBelief) {
            // ND4J 1.0.0-M2.1 bug: AdaBelief.instantiate(INDArray, boolean) flattens the view to 1-D and then
            // halves shape[1], which always throws ArrayIndexOutOfBoundsException. Its map form works; hand it
            // the two halves of the same view (M, then S), so the state still lives in our flat row.
            long half = view.length() / 2;
            Map<String, INDArray> state = new HashMap<>();
            state.put("M", view.get(NDArrayIndex.point(0), NDArrayIndex.interval(0, half)).reshape(1, half));
            state.put("S", view.get(NDArrayIndex.point(0), NDArrayIndex.interval(half, 2 * half)).reshape(1, half));
            return updater.instantiate(state, true);
        }
        return updater.instantiate(view, true);
    }

    private static void requireContiguous(LoraAdapter adapter, INDArray grad, String what) {
        if (grad.ordering() != 'c' || grad.elementWiseStride() != 1 || grad.isView()) {
            // ND4J's updaters would silently leave such an array unchanged.
            throw new IllegalStateException("adapter '" + adapter.name() + "': " + what
                    + " must be a c-order contiguous array for ND4J's updaters, got ordering " + grad.ordering()
                    + " and element-wise stride " + grad.elementWiseStride());
        }
    }
}
