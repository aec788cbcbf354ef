package io.github.lora4j.train;

import io.github.lora4j.LoraAdapter;
import io.github.lora4j.LoraLinear;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.HashMap;
import java.util.IdentityHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.indexing.NDArrayIndex;
import org.nd4j.linalg.learning.GradientUpdater;
import org.nd4j.linalg.learning.config.AdaBelief;
import org.nd4j.linalg.learning.config.IUpdater;
import org.nd4j.linalg.learning.regularization.WeightDecay;

/**
 * Trains the active adapters of a set of {@link LoraLinear} layers with any ND4J updater ({@code Sgd},
 * {@code Adam}, {@code Nesterovs}, {@code RmsProp}, {@code AdaGrad}, ... with their {@code ISchedule} learning
 * rates), optionally with global gradient-norm clipping and decoupled (AdamW-style) weight decay.
 *
 * <pre>{@code
 * LoraTrainer trainer = LoraTrainer.builder().updater(new Adam(1e-3)).clipGradientNorm(1.0).weightDecay(0.01)
 *         .build(layer);
 * layer.train();
 * for (...) {
 *     INDArray y = layer.forward(x);
 *     layer.backward(dLossDy(y), false); // accumulates gradA / gradB; false: x is data, skip dL/dx
 *     trainer.step();                 // A -= step(gradA), B -= step(gradB); gradients zeroed
 * }
 * }</pre>
 * Where the layer's input is data (the first adapted layer), {@code backward(g, false)} skips {@code dL/dx}, one gemm
 * of W's size per step; layers further up pass {@code true} (or call {@code backward(g)}) to get the gradient for the
 * layer below.
 *
 * <h2>What is trained, what state exists</h2>
 * Only {@code A [r, in]} and {@code B [out, r]} of each layer's <em>active</em> adapter change, through
 * {@link LoraLinear#updateTrainable}; {@code W} and the bias are never touched and get neither gradient nor
 * optimizer state. Optimizer state is kept per adapter object, created the first time that adapter is trained
 * (for the adapters active at {@link Builder#build} it is created at once): switching a layer between adapters
 * keeps each adapter's own moments, and an adapter can never meet state of another shape. Its size is
 * {@code updater.stateSize(1) · r·(in + out)} elements per adapter ({@link #updaterStateSize()}): 0 for Sgd,
 * 1 for Nesterovs, 2 for Adam. Layers with no active adapter, or with adapters disabled, are skipped.
 *
 * <h2>One step</h2>
 * <ol>
 *   <li>Validate everything first: no layer merged, every gradient finite. On failure an
 *       {@link IllegalStateException} names the layer and adapter and nothing changes (parameters, optimizer
 *       state, iteration counter, gradients).</li>
 *   <li>Global L2 norm {@code ‖g‖} over all trained gradients; with {@code clipGradientNorm(c)} and
 *       {@code ‖g‖ > c} every gradient is multiplied by {@code c / ‖g‖} (PyTorch's {@code clip_grad_norm_},
 *       without its epsilon).</li>
 *   <li>The ND4J updater turns each gradient into its step in place
 *       ({@code applyUpdater(grad, iteration, epoch)}).</li>
 *   <li>With {@code weightDecay(wd)}: {@code step += lr(iteration, epoch) · wd · param}, exactly as DL4J applies
 *       {@code new WeightDecay(wd, true)} after the updater (its POST_UPDATER step, whose class this uses). With
 *       Adam this is AdamW: {@code p ← p − lr·wd·p − adamStep}. ND4J 1.0.0-M2.1 has no AdamW class.</li>
 *   <li>{@code param -= step}; the gradients are zeroed; the iteration counter advances.</li>
 * </ol>
 *
 * <h2>Why the updater runs on each gradient array, not on one flat buffer</h2>
 * ND4J's updaters transform the gradient in place and silently do nothing for f-order or non-contiguous arrays.
 * {@link LoraAdapter#gradA()} and {@link LoraAdapter#gradB()} are each c-order and contiguous, and every ND4J
 * updater is element-wise, so running one updater instance per array (each on its own contiguous slice of one flat
 * per-adapter state row) gives exactly the result of one flat buffer while saving the two copies into and out of
 * it: two updater calls instead of two copies plus one call.
 *
 * <h2>Threading</h2>
 * A trainer is not thread-safe and assumes that, during {@link #step()}, no other thread merges, switches
 * adapters or runs backward on its layers (each layer's own lock still keeps every single update atomic).
 */
public final class LoraTrainer {

    private final IUpdater updater;
    private final double clipNorm;
    private final WeightDecay weightDecay;
    private final double weightDecayCoefficient;
    private final List<LoraLinear> layers;
    private final Map<LoraAdapter, AdapterState> states = new IdentityHashMap<>();
    private int iteration;
    private int epoch;

    private LoraTrainer(Builder b, List<LoraLinear> layers) {
        this.updater = b.updater.clone();
        this.clipNorm = b.clipNorm;
        this.weightDecayCoefficient = b.weightDecay;
        this.weightDecay = b.weightDecay > 0 ? new WeightDecay(b.weightDecay, true) : null;
        this.layers = layers;
        for (LoraLinear layer : layers) {
            LoraAdapter adapter = trainedAdapter(layer);
            if (adapter != null) {
                stateOf(layer, adapter);
            }
        }
    }

    /** A builder: {@link Builder#updater} is required, clipping and weight decay are off by default. */
    public static Builder builder() {
        return new Builder();
    }

    /**
     * One optimisation step on the active adapter of every layer, then zeroes those adapters' gradients.
     *
     * @return the global L2 norm of all trained gradients before clipping
     * @throws IllegalStateException if a layer is merged or a gradient holds NaN or infinity; nothing is changed
     */
    public double step() {
        List<LoraLinear> trained = new ArrayList<>();
        List<LoraAdapter> adapters = new ArrayList<>();
        double sumSquares = 0;
        for (int i = 0; i < layers.size(); i++) {
            LoraLinear layer = layers.get(i);
            if (layer.isMerged()) {
                throw new IllegalStateException("layer " + i + ": training is refused while adapter '"
                        + layer.activeAdapter() + "' is merged into W; unmerge() first (nothing was changed)");
            }
            LoraAdapter adapter = trainedAdapter(layer);
            if (adapter == null) {
                continue;
            }
            double na = checkedNorm(i, adapter, "gradA", adapter.gradA());
            double nb = checkedNorm(i, adapter, "gradB", adapter.gradB());
            sumSquares += na * na + nb * nb;
            trained.add(layer);
            adapters.add(adapter);
        }
        double norm = Math.sqrt(sumSquares);
        double clipScale = clipNorm > 0 && norm > clipNorm ? clipNorm / norm : 1.0;
        double lr = updater.hasLearningRate() ? updater.getLearningRate(iteration, epoch) : 0.0;
        // Adapters deleted from their layer will never be trained again: drop their state.
        states.entrySet().removeIf(e -> !hasAdapter(e.getValue().layer, e.getKey()));
        for (int i = 0; i < trained.size(); i++) {
            LoraAdapter expected = adapters.get(i);
            AdapterState state = stateOf(trained.get(i), expected);
            trained.get(i).updateTrainable(adapter -> {
                if (adapter != expected) {
                    throw new IllegalStateException("the active adapter changed during step(): expected '"
                            + expected.name() + "', got '" + adapter.name() + "'");
                }
                apply(state.forA, adapter.a(), adapter.gradA(), clipScale, lr);
                apply(state.forB, adapter.b(), adapter.gradB(), clipScale, lr);
            });
        }
        iteration++;
        return norm;
    }

    /** {@code param -= step(grad)}; {@code grad} (c-order, contiguous) is consumed and left at zero. */
    private void apply(GradientUpdater<?> u, INDArray param, INDArray grad, double clipScale, double lr) {
        if (clipScale != 1.0) {
            grad.muli(clipScale);
        }
        u.applyUpdater(grad, iteration, epoch);
        if (weightDecay != null) {
            weightDecay.apply(param, grad, lr, iteration, epoch);
        }
        param.subi(grad);
        grad.assign(0);
    }

    /** Clears the gradients of every adapter of every layer (also inactive ones). */
    public void zeroGrad() {
        for (LoraLinear layer : layers) {
            layer.zeroGrad();
        }
    }

    /**
     * Elements of optimizer state over all adapters trained so far: {@code updater.stateSize(1)·r·(in + out)} each
     * (the elements' data type is the layer's). Nothing is ever kept for {@code W}. The state of an adapter deleted
     * from its layer is released at the next {@link #step()}.
     */
    public long updaterStateSize() {
        long n = 0;
        for (AdapterState s : states.values()) {
            n += s.size;
        }
        return n;
    }

    /** Steps taken so far; the iteration that ND4J's updaters and iteration schedules see next. */
    public int iteration() {
        return iteration;
    }

    /** The epoch that ND4J's updaters and epoch schedules see; advanced only by {@link #nextEpoch()}. */
    public int epoch() {
        return epoch;
    }

    /** Advances the epoch counter (for {@code ScheduleType.EPOCH} schedules). */
    public void nextEpoch() {
        epoch++;
    }

    /** The layers this trainer updates, in the order given. */
    public List<LoraLinear> layers() {
        return layers;
    }

    /** A copy of the updater configuration in use (the trainer keeps its own clone). */
    public IUpdater updater() {
        return updater.clone();
    }

    /** The clipping threshold on the global gradient L2 norm, or 0 when clipping is off. */
    public double clipGradientNorm() {
        return clipNorm;
    }

    /** The decoupled weight decay coefficient, 0 when off. */
    public double weightDecay() {
        return weightDecayCoefficient;
    }

    @Override
    public String toString() {
        return "LoraTrainer{updater=" + updater + ", clipGradientNorm=" + clipNorm + ", weightDecay="
                + weightDecayCoefficient + ", layers=" + layers.size() + ", iteration=" + iteration + ", epoch="
                + epoch + ", updaterStateSize=" + updaterStateSize() + "}";
    }

    // ---------------------------------------------------------------- internals

    /** The adapter a step would train on this layer, or null (no active adapter, or adapters disabled). */
    private static LoraAdapter trainedAdapter(LoraLinear layer) {
        String name = layer.activeAdapter();
        if (name == null || !layer.adaptersEnabled()) {
            return null;
        }
        return layer.adapter(name);
    }

    private static double checkedNorm(int layerIndex, LoraAdapter adapter, String what, INDArray grad) {
        double n = grad.norm2Number().doubleValue();
        if (Double.isFinite(n)) {
            return n;
        }
        if (grad.isNaN().any() || grad.isInfinite().any()) {
            throw new IllegalStateException("layer " + layerIndex + ", adapter '" + adapter.name() + "': " + what
                    + " expected finite values, found NaN or infinity; step refused, nothing was changed");
        }
        // Finite entries whose squares overflow the data type: take the norm in double.
        return grad.castTo(DataType.DOUBLE).norm2Number().doubleValue();
    }

    private AdapterState stateOf(LoraLinear layer, LoraAdapter adapter) {
        return states.computeIfAbsent(adapter, a -> newState(layer, a));
    }

    private static boolean hasAdapter(LoraLinear layer, LoraAdapter adapter) {
        return layer.adapterNames().contains(adapter.name()) && layer.adapter(adapter.name()) == adapter;
    }

    private AdapterState newState(LoraLinear layer, LoraAdapter adapter) {
        INDArray gradA = adapter.gradA();
        INDArray gradB = adapter.gradB();
        requireContiguous(adapter, gradA, "gradA");
        requireContiguous(adapter, gradB, "gradB");
        long sa = updater.stateSize(gradA.length());
        long sb = updater.stateSize(gradB.length());
        if (sa + sb == 0) {
            // Stateless updaters (Sgd, NoOp) refuse a view array.
            return new AdapterState(layer, updater.instantiate((INDArray) null, true),
                    updater.instantiate((INDArray) null, true), 0);
        }
        // One flat c-order row per adapter; A's and B's updaters each own a contiguous slice of it.
        INDArray flat = Nd4j.zeros(gradA.dataType(), 1, sa + sb);
        INDArray viewA = flat.get(NDArrayIndex.point(0), NDArrayIndex.interval(0, sa)).reshape(1, sa);
        INDArray viewB = flat.get(NDArrayIndex.point(0), NDArrayIndex.interval(sa, sa + sb)).reshape(1, sb);
        return new AdapterState(layer, instantiate(viewA), instantiate(viewB), sa + sb);
    }

    /** An updater whose state lives in {@code view} ({@code [1, stateSize]}, zeros). */
    private GradientUpdater<?> instantiate(INDArray view) {
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

    /** Optimizer state of one adapter: an updater for A and one for B over slices of one flat row. */
    private static final class AdapterState {
        final LoraLinear layer;
        final GradientUpdater<?> forA;
        final GradientUpdater<?> forB;
        final long size;

        AdapterState(LoraLinear layer, GradientUpdater<?> forA, GradientUpdater<?> forB, long size) {
            this.layer = layer;
            this.forA = forA;
            this.forB = forB;
            this.size = size;
        }
    }

    /**
     * Configures a {@link LoraTrainer}. Setters validate at once and name the field, value and allowed range.
     */
    public static final class Builder {
        private IUpdater updater;
        private double clipNorm;
        private double weightDecay;

        private Builder() {
        }

        /**
         * The ND4J updater configuration (required), e.g. {@code new Adam(1e-3)} or
         * {@code new Sgd(new StepSchedule(ScheduleType.ITERATION, 0.1, 0.5, 100))}; the trainer keeps a clone.
         */
        public Builder updater(IUpdater updater) {
            this.updater = Objects.requireNonNull(updater, "updater must not be null");
            return this;
        }

        /** Clip the global L2 norm of all trained gradients to {@code maxNorm} (finite, {@code > 0}). Default: off. */
        public Builder clipGradientNorm(double maxNorm) {
            if (!(maxNorm > 0) || Double.isInfinite(maxNorm)) {
                throw new IllegalArgumentException("clipGradientNorm must be finite and > 0, got " + maxNorm);
            }
            this.clipNorm = maxNorm;
            return this;
        }

        /**
         * Decoupled weight decay {@code wd} (finite, {@code >= 0}; 0 = off): after the updater, the step grows by
         * {@code lr·wd·param}, as DL4J applies {@code new WeightDecay(wd, true)}. With Adam this is AdamW.
         */
        public Builder weightDecay(double wd) {
            if (!(wd >= 0) || Double.isInfinite(wd)) {
                throw new IllegalArgumentException("weightDecay must be finite and >= 0, got " + wd);
            }
            this.weightDecay = wd;
            return this;
        }

        /** A trainer over {@code layers}; see {@link #build(List)}. */
        public LoraTrainer build(LoraLinear... layers) {
            Objects.requireNonNull(layers, "layers must not be null");
            return build(Arrays.asList(layers));
        }

        /**
         * A trainer over {@code layers} (at least one, no nulls, no layer twice).
         *
         * @throws IllegalStateException    if no updater was set
         * @throws IllegalArgumentException for an empty list, a null or repeated layer
         */
        public LoraTrainer build(List<LoraLinear> layers) {
            Objects.requireNonNull(layers, "layers must not be null");
            if (updater == null) {
                throw new IllegalStateException("updater is required: call updater(new Adam(...)) before build");
            }
            if (layers.isEmpty()) {
                throw new IllegalArgumentException("layers: expected at least one layer, got none");
            }
            Map<LoraLinear, Integer> seen = new IdentityHashMap<>();
            for (int i = 0; i < layers.size(); i++) {
                LoraLinear l = layers.get(i);
                if (l == null) {
                    throw new IllegalArgumentException("layers[" + i + "] is null");
                }
                Integer first = seen.putIfAbsent(l, i);
                if (first != null) {
                    throw new IllegalArgumentException("layers[" + i + "] is the same layer as layers[" + first
                            + "]; each layer may appear once (it would be stepped twice)");
                }
            }
            return new LoraTrainer(this, Collections.unmodifiableList(new ArrayList<>(layers)));
        }
    }
}
