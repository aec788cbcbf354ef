package io.github.lora4j.train;

import io.github.lora4j.AllOrNothing;
import io.github.lora4j.LoraAdapter;
import io.github.lora4j.LoraEmbedding;
import io.github.lora4j.LoraLinear;
import io.github.lora4j.LoraTrainable;
import io.github.lora4j.io.AdapterFormatException;
import io.github.lora4j.model.LoraModel;
import java.io.IOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.IdentityHashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.stream.IntStream;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.learning.GradientUpdater;
import org.nd4j.linalg.learning.config.IUpdater;
import org.nd4j.linalg.learning.regularization.WeightDecay;

/**
 * Trains the active adapters of a set of {@link LoraLinear} and {@link LoraEmbedding} layers (any
 * {@link LoraTrainable}) with any ND4J updater ({@code Sgd},
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
 * <p>Several adapters train in one batch (as mLoRA and ASPEN do) when the forward is a mixed batch,
 * {@code layer.forward(x, adapterPerRow)}: its backward gives each adapter the gradients of its own rows, and
 * {@link #step()} steps every adapter that had rows and only those, each with its own optimizer state and its own
 * step count, as if each had been trained alone on its rows (with clipping off: clipping takes one norm over all of
 * them). See {@code docs/many-adapters.md}.
 *
 * <h2>What is trained, what state exists</h2>
 * Only {@code A [r, in]} and {@code B [out, r]} (and a DoRA adapter's magnitude {@code m [out]}, stepped like them)
 * of each layer's <em>active</em> adapter (after mixed batches: of each adapter that had rows) change (an
 * embedding's {@code A [r, num_embeddings]} and {@code B [dim, r]}, from the gradients {@link LoraEmbedding#backward}
 * accumulates), through {@link LoraTrainable#updateTrainable(String, java.util.function.Consumer)}; {@code W} (an
 * embedding's table) and the bias are never touched and get neither gradient nor
 * optimizer state. Optimizer state is kept per adapter object, created the first time that adapter is trained
 * (for the adapters active at {@link Builder#build} it is created at once): switching a layer between adapters
 * keeps each adapter's own moments, and an adapter can never meet state of another shape. Its size is
 * {@code updater.stateSize(1) · r·(in + out)} elements per adapter ({@code + out} for DoRA;
 * {@link #updaterStateSize()}): 0 for Sgd,
 * 1 for Nesterovs, 2 for Adam. Layers with no active adapter, or with adapters disabled, are skipped.
 *
 * <p>Each adapter also counts its own steps, and its updater sees that count as the iteration (Adam's bias
 * correction {@code 1 − β^t}, iteration schedules), as PyTorch keeps a {@code step} per parameter: an adapter first
 * trained after 100 steps of another starts at {@code t = 1}, and one that gets no rows in a mixed batch neither
 * steps nor counts. The epoch and {@link #iteration()} are the trainer's.
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
 *       ({@code applyUpdater(grad, steps, epoch)}, {@code steps} the adapter's own step count).</li>
 *   <li>With {@code weightDecay(wd)}: {@code step += lr(steps, epoch) · wd · param}, exactly as DL4J applies
 *       {@code new WeightDecay(wd, true)} after the updater (its POST_UPDATER step, whose class this uses). With
 *       Adam this is AdamW: {@code p ← p − lr·wd·p − adamStep}. ND4J 1.0.0-M2.1 has no AdamW class.</li>
 *   <li>{@code param -= step}; the gradients are zeroed; the adapters' step counts and the iteration counter
 *       advance.</li>
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
 *
 * <h2>New values are checked before they are committed</h2>
 * {@link #step()} computes every adapter's step into scratch arrays (the gradients stay as they are), checks that
 * {@code A − step} and {@code B − step} are finite in the layer's data type, and only then writes any parameter. A
 * step that would make an element NaN or infinite ({@code Sgd(NaN)}, {@code Adam} with epsilon 0 on a zero
 * gradient, a learning rate that overflows FLOAT) is refused with an {@link IllegalStateException} naming the
 * module, adapter, parameter and element; the updater state touched so far is restored from a copy taken before
 * the updater ran, so parameters, gradients, optimizer state and the iteration counter are exactly as before. The
 * price is one copy of each gradient and of the optimizer state per step, kept per adapter: an extra
 * {@code (1 + updater.stateSize(1))·r·(in + out)} elements per trained adapter.
 *
 * <h2>Saving and resuming</h2>
 * {@link #saveState(Path)} writes the optimizer state, iteration, epoch and settings beside the adapter files
 * ({@value #STATE_TENSORS_FILE}, {@value #STATE_CONFIG_FILE}); {@link #loadState(Path, LoraModel)} builds a trainer
 * that continues where the saved one stopped. With dropout 0 the resumed run is bit for bit the uninterrupted
 * one. With dropout {@code > 0} it is not: the dropout mask stream belongs to each adapter inside
 * {@link LoraLinear} and cannot be saved through its public API, so a layer rebuilt after a restart draws its masks
 * again from the start of its seed's stream; the updater state, iteration and epoch are still restored exactly.
 */
public final class LoraTrainer {

    /** File of the optimizer state tensors that {@link #saveState} writes (safetensors). */
    public static final String STATE_TENSORS_FILE = "trainer_state.safetensors";

    /** File of the trainer's settings, counters and index of the state tensors that {@link #saveState} writes. */
    public static final String STATE_CONFIG_FILE = "trainer_state.json";

    private final IUpdater updater;
    private final double clipNorm;
    private final WeightDecay weightDecay;
    private final double weightDecayCoefficient;
    private final List<LoraTrainable> layers;
    /** Module path (model trainers) or list index (layer trainers) of each layer: the keys of saved state. */
    private final List<String> names;
    private final boolean overModel;
    private final Map<LoraAdapter, AdapterState> states = new IdentityHashMap<>();
    private final StateArrays.Scratch scratch = new StateArrays.Scratch();
    private int iteration;
    private int epoch;

    private LoraTrainer(Builder b, Map<String, LoraTrainable> layers, boolean overModel) {
        this.updater = b.updater.clone();
        this.clipNorm = b.clipNorm;
        this.weightDecayCoefficient = b.weightDecay;
        this.weightDecay = b.weightDecay > 0 ? new WeightDecay(b.weightDecay, true) : null;
        this.layers = Collections.unmodifiableList(new ArrayList<>(layers.values()));
        this.names = List.copyOf(layers.keySet());
        this.overModel = overModel;
        for (LoraTrainable layer : this.layers) {
            LoraAdapter adapter = trainedAdapter(layer);
            if (adapter != null) {
                stateOf(layer, adapter);
            }
        }
    }

    /**
     * A builder: {@link Builder#updater} is required, clipping and weight decay are off by default.
     *
     * @return a new builder with nothing set
     */
    public static Builder builder() {
        return new Builder();
    }

    /**
     * One optimisation step on the adapters that got gradients, then zeroes their gradients: on each layer every
     * adapter that a backward gave gradients since the last step ({@link LoraTrainable#adaptersWithGradients()}: after a
     * {@linkplain LoraLinear#forward(INDArray, String[]) mixed batch}, every adapter that had rows in it, each with its
     * own optimizer state), or, when no backward ran on the layer, its active adapter. The new values of {@code A} and
     * {@code B} are computed and checked for every layer and adapter before any is written. Clipping takes the global
     * norm over all of them, as PyTorch's {@code clip_grad_norm_} over all parameters does.
     *
     * @return the global L2 norm of all trained gradients before clipping
     * @throws IllegalStateException if a layer is merged, a gradient holds NaN or infinity, or the step would make
     *                               an element of {@code A} or {@code B} NaN or infinite; nothing is changed then
     *                               (parameters, gradients, optimizer state, iteration counter)
     */
    public double step() {
        List<LoraTrainable> trained = new ArrayList<>();
        List<LoraAdapter> adapters = new ArrayList<>();
        List<String> labels = new ArrayList<>();
        double sumSquares = 0;
        for (int i = 0; i < layers.size(); i++) {
            LoraTrainable layer = layers.get(i);
            if (layer.isMerged()) {
                throw new IllegalStateException(label(i) + ": training is refused while adapter '"
                        + layer.activeAdapter() + "' is merged into W; unmerge() first (nothing was changed)");
            }
            for (LoraAdapter adapter : steppedAdapters(layer)) {
                double na = checkedNorm(label(i), adapter, "gradA", adapter.gradA());
                double nb = checkedNorm(label(i), adapter, "gradB", adapter.gradB());
                double nm = adapter.isDora()
                        ? checkedNorm(label(i), adapter, "gradMagnitude", adapter.gradMagnitude()) : 0;
                sumSquares += na * na + nb * nb + nm * nm;
                trained.add(layer);
                adapters.add(adapter);
                labels.add(label(i));
            }
        }
        double norm = Math.sqrt(sumSquares);
        double clipScale = clipNorm > 0 && norm > clipNorm ? clipNorm / norm : 1.0;
        // Adapters deleted from their layer will never be trained again: drop their state.
        states.entrySet().removeIf(e -> !hasAdapter(e.getValue().layer, e.getKey()));
        // Phase 1: every step into scratch and checked; the updater state is backed up before it changes, and on
        // the first refusal every state this call touched is restored (the failing one at once, the others by
        // AllOrNothing's rollback), so a refused step leaves the trainer as it was.
        List<AdapterState> computed = new ArrayList<>();
        List<Integer> indices = IntStream.range(0, trained.size()).boxed().toList();
        AllOrNothing.run(indices, i -> {
            LoraAdapter adapter = adapters.get(i);
            AdapterState state = stateOf(trained.get(i), adapter);
            state.backUp();
            try {
                state.ensureScratch(adapter);
                computeStep(state.forA, adapter.a(), adapter.gradA(), state.stepA, clipScale, state.steps);
                computeStep(state.forB, adapter.b(), adapter.gradB(), state.stepB, clipScale, state.steps);
                StateArrays.requireFiniteDifference(labels.get(i), adapter.name(), "A", adapter.a(), state.stepA, updater, scratch);
                StateArrays.requireFiniteDifference(labels.get(i), adapter.name(), "B", adapter.b(), state.stepB, updater, scratch);
                if (adapter.isDora()) {
                    computeStep(state.forM, adapter.magnitude(), adapter.gradMagnitude(), state.stepM, clipScale, state.steps);
                    StateArrays.requireFiniteDifference(labels.get(i), adapter.name(), "magnitude",
                            adapter.magnitude(), state.stepM, updater, scratch);
                }
            } catch (RuntimeException e) {
                state.restore();
                throw e;
            }
            computed.add(state);
        }, i -> computed.get(i).restore(), i -> labels.get(i) + " adapter '" + adapters.get(i).name() + "'",
                "computing the step of", "restoring the updater state of", "advanced");
        // Phase 2: commit.
        for (int i = 0; i < trained.size(); i++) {
            LoraAdapter expected = adapters.get(i);
            AdapterState state = computed.get(i);
            trained.get(i).updateTrainable(expected.name(), adapter -> {
                if (adapter != expected) {
                    throw new IllegalStateException("adapter '" + expected.name() + "' was replaced during step()");
                }
                adapter.a().subi(state.stepA);
                adapter.b().subi(state.stepB);
                if (adapter.isDora()) {
                    adapter.magnitude().subi(state.stepM);
                }
            });
            trained.get(i).zeroGrad(expected.name());
            state.steps++;
        }
        iteration++;
        return norm;
    }

    /**
     * {@code step = update(clipScale·grad)} (+ {@code lr·wd·param}) into {@code step} at the adapter's own step count
     * {@code steps}; {@code grad} is not changed.
     */
    private void computeStep(GradientUpdater<?> u, INDArray param, INDArray grad, INDArray step, double clipScale,
                             int steps) {
        StateArrays.copy(grad, step);
        if (clipScale != 1.0) {
            step.muli(clipScale);
        }
        u.applyUpdater(step, steps, epoch);
        if (weightDecay != null) {
            double lr = updater.hasLearningRate() ? updater.getLearningRate(steps, epoch) : 0.0;
            weightDecay.apply(param, step, lr, steps, epoch);
        }
    }

    /** Clears the gradients of every adapter of every layer (also inactive ones). */
    public void zeroGrad() {
        for (LoraTrainable layer : layers) {
            layer.zeroGrad();
        }
    }

    /**
     * Elements of optimizer state over all adapters trained so far: {@code updater.stateSize(1)·r·(in + out)} each
     * (the elements' data type is the layer's). Nothing is ever kept for {@code W}. The state of an adapter deleted
     * from its layer is released at the next {@link #step()}.
     *
     * @return the number of state elements held, summed over all adapters
     */
    public long updaterStateSize() {
        long n = 0;
        for (AdapterState s : states.values()) {
            n += s.size;
        }
        return n;
    }

    /**
     * Steps taken so far. Each adapter's updater sees the adapter's own step count instead (equal to this for an
     * adapter trained at every step since the trainer was built).
     *
     * @return the number of steps taken, starting at 0
     */
    public int iteration() {
        return iteration;
    }

    /**
     * The epoch that ND4J's updaters and epoch schedules see; advanced only by {@link #nextEpoch()}.
     *
     * @return the current epoch, starting at 0
     */
    public int epoch() {
        return epoch;
    }

    /** Advances the epoch counter (for {@code ScheduleType.EPOCH} schedules). */
    public void nextEpoch() {
        epoch++;
    }

    /**
     * The layers this trainer updates, in the order given (over a model: its targeted linear and embedding modules,
     * in model order), one per {@link #layerNames()} entry.
     *
     * @return an unmodifiable list of the layers
     */
    public List<LoraTrainable> layers() {
        return layers;
    }

    /**
     * A copy of the updater configuration in use (the trainer keeps its own clone).
     *
     * @return a fresh clone of the updater configuration; changing it does not affect the trainer
     */
    public IUpdater updater() {
        return updater.clone();
    }

    /**
     * The clipping threshold on the global gradient L2 norm, or 0 when clipping is off.
     *
     * @return the threshold, or 0 when clipping is off
     */
    public double clipGradientNorm() {
        return clipNorm;
    }

    /**
     * The decoupled weight decay coefficient, 0 when off.
     *
     * @return the coefficient, or 0 when weight decay is off
     */
    public double weightDecay() {
        return weightDecayCoefficient;
    }

    /**
     * The key under which each layer's state is saved, in {@link #layers()} order: the module path for a trainer
     * built over a {@link LoraModel}, the layer's index ({@code "0"}, {@code "1"}, ...) for one built over layers.
     *
     * @return an unmodifiable list, one name per layer
     */
    public List<String> layerNames() {
        return names;
    }

    // ---------------------------------------------------------------- saving and resuming

    /**
     * Writes the trainer's state to {@code dir} (created if absent), beside the adapter files that
     * {@link LoraModel#save} writes there: {@value #STATE_TENSORS_FILE} holds the updater state of every adapter
     * trained so far as one tensor per parameter (key {@code <module path>/<adapter>/lora_A}, 1-D, the layer's data
     * type: ND4J's own state layout for that parameter, e.g. Adam's {@code [m | v]}), and {@value #STATE_CONFIG_FILE}
     * the updater configuration (ND4J's JSON form, schedules included), clipping threshold, weight decay, iteration,
     * epoch, module names, the shapes of each state's {@code A} and {@code B}, the lora4j version and one save id that
     * both files carry. Save the adapter itself with {@link LoraModel#save} (or {@code PeftAdapterFiles}) at the same
     * step: the state does not contain {@code A} or {@code B}.
     *
     * <p>The files are written as the adapter files are ({@link io.github.lora4j.io.SafeFiles#write}): one save per
     * directory at a time (also across processes), temporary files renamed over the targets, and if the second rename
     * fails the old tensor file is put back, so the previous checkpoint stays loadable; new files get the umask's
     * mode, replaced ones keep theirs. {@link #loadState} refuses a pair whose save ids differ (what a crash between
     * the renames leaves). A state {@link #loadState} would refuse is not written: an updater whose JSON ND4J cannot
     * read back (its {@code RampSchedule}), a non-finite learning rate, hyper-parameters with which every step fails,
     * optimizer state holding NaN or infinity.
     *
     * @param dir the directory to write into (usually the adapter's own)
     * @throws IllegalArgumentException if two saved tensors would get the same key (a module path or adapter name
     *                                  containing {@code '/'} can cause that)
     * @throws IllegalStateException    if {@link #loadState} could not resume the state (the message names the value);
     *                                  nothing is written then
     * @throws IOException              if writing fails; existing files are then left as they were, or (a crash
     *                                  between the two renames) detected by {@link #loadState}
     */
    public void saveState(Path dir) throws IOException {
        Objects.requireNonNull(dir, "dir must not be null");
        // In layer order, then the layer's adapter order: equal runs write equal files.
        List<TrainerStateFiles.Saved> saved = new ArrayList<>();
        List<TrainerStateFiles.Steps> steps = new ArrayList<>();
        for (int i = 0; i < layers.size(); i++) {
            LoraTrainable layer = layers.get(i);
            for (String adapterName : layer.adapterNames()) {
                LoraAdapter adapter = layer.adapter(adapterName);
                AdapterState st = states.get(adapter);
                if (st != null && st.size > 0) {
                    saved.add(new TrainerStateFiles.Saved(names.get(i), adapterName, adapter.a().shape(),
                            adapter.b().shape(), st.stateA(), st.stateB(), st.stateM()));
                }
                if (st != null) {
                    steps.add(new TrainerStateFiles.Steps(names.get(i), adapterName, st.steps));
                }
            }
        }
        TrainerStateFiles.write(dir, new TrainerStateFiles.Settings(updater, clipNorm, weightDecayCoefficient,
                iteration, epoch, names, overModel), saved, steps);
    }

    /**
     * A trainer that continues the run saved by {@link #saveState} in {@code dir} on {@code model}, whose adapters
     * must already hold the weights saved at the same step (e.g. a fresh model on which
     * {@link LoraModel#load(Path, String)} was called with the same directory): the updater, clipping, weight decay,
     * iteration and epoch come from the file, and each adapter's updater state is restored bit for bit. Trains
     * the model's linear and embedding modules, as {@link Builder#build(LoraModel)} does.
     *
     * <p>The files are checked completely before anything is built: regular files of bounded size only, JSON within
     * limits (8 MiB, nesting 64 deep, numbers of 100 characters: a number of a million digits or a nesting 100,000
     * deep is refused at once), matching save ids, every module and adapter the files name must exist in the model
     * with the saved {@code A} and {@code B} shapes (not just as many elements) and data type, the modules must be the
     * model's targeted modules. Only ND4J's own updater and schedule classes are instantiated from the JSON, checked
     * by exact name before any class is loaded. Values with which every later step would fail are refused by name: a
     * NaN or infinite learning rate, betas outside {@code [0, 1)}, an epsilon of 0, optimizer state holding NaN or
     * infinity (or a negative second moment). Nothing in the model is changed, whether the call succeeds or not.
     *
     * @param dir   the directory {@link #saveState} wrote
     * @param model the model to continue training, holding the adapter weights saved at the same step
     * @return a new trainer whose next {@link #step()} is the saved run's next step
     * @throws AdapterFormatException   if a file is missing parts, corrupt, hostile, from another save, or does not
     *                                  fit the model (the message names the file, what was expected and what came)
     * @throws IllegalStateException    if LoRA was not applied to {@code model}
     * @throws IOException              if reading fails (e.g. {@link java.nio.file.NoSuchFileException})
     */
    public static LoraTrainer loadState(Path dir, LoraModel model) throws IOException {
        Objects.requireNonNull(model, "model must not be null");
        return load(dir, modelLayers(model), true);
    }

    /**
     * {@link #loadState(Path, LoraModel)} for a trainer built over {@code layers} (the same layers, in the same order,
     * as the saved trainer's: the files name them by index).
     *
     * @param dir    the directory {@link #saveState} wrote
     * @param layers the layers to continue training, holding the adapter weights saved at the same step
     * @return a new trainer whose next {@link #step()} is the saved run's next step
     * @throws AdapterFormatException   as {@link #loadState(Path, LoraModel)}
     * @throws IOException              if reading fails
     * @throws IllegalArgumentException for an empty list, a null or repeated layer
     */
    public static LoraTrainer loadState(Path dir, List<? extends LoraTrainable> layers) throws IOException {
        return load(dir, indexedLayers(layers), false);
    }

    private static LoraTrainer load(Path dir, Map<String, LoraTrainable> layers, boolean overModel) throws IOException {
        Objects.requireNonNull(dir, "dir must not be null");
        TrainerStateFiles.Loaded loaded = TrainerStateFiles.read(dir, layers, overModel);
        TrainerStateFiles.Settings s = loaded.settings();
        Builder b = builder().updater(s.updater());
        if (s.clipGradientNorm() > 0) {
            b.clipGradientNorm(s.clipGradientNorm());
        }
        b.weightDecay(s.weightDecay());
        LoraTrainer trainer = new LoraTrainer(b, layers, overModel);
        trainer.iteration = s.iteration();
        trainer.epoch = s.epoch();
        for (TrainerStateFiles.Saved st : loaded.states()) {
            LoraTrainable layer = layers.get(st.module());
            AdapterState state = trainer.stateOf(layer, layer.adapter(st.adapter()));
            state.load(st.stateA(), st.stateB(), st.stateM());
        }
        if (loaded.steps() == null) {
            // Saved before step counts per adapter existed: every adapter stepped at the trainer's iteration.
            trainer.states.values().forEach(state -> state.steps = s.iteration());
        } else {
            for (TrainerStateFiles.Steps st : loaded.steps()) {
                LoraTrainable layer = layers.get(st.module());
                trainer.stateOf(layer, layer.adapter(st.adapter())).steps = st.steps();
            }
        }
        return trainer;
    }

    /** A copy of the updater state of adapter {@code adapter} of layer {@code layer}, {@code [1, size]}, or null. */
    INDArray updaterStateCopy(LoraTrainable layer, String adapter) {
        AdapterState st = states.get(layer.adapter(adapter));
        return st == null || st.flat == null ? null : st.flat.dup('c');
    }

    @Override
    public String toString() {
        return "LoraTrainer{updater=" + updater + ", clipGradientNorm=" + clipNorm + ", weightDecay="
                + weightDecayCoefficient + ", layers=" + layers.size() + ", iteration=" + iteration + ", epoch="
                + epoch + ", updaterStateSize=" + updaterStateSize() + "}";
    }

    // ---------------------------------------------------------------- internals

    /** The adapters a step trains on this layer ({@link LoraTrainable#adaptersWithGradients()}); none while disabled. */
    private static List<LoraAdapter> steppedAdapters(LoraTrainable layer) {
        if (!layer.adaptersEnabled()) {
            return List.of();
        }
        List<String> names = layer.adaptersWithGradients();
        List<LoraAdapter> out = new ArrayList<>(names.size());
        for (String name : names) {
            out.add(layer.adapter(name));
        }
        return out;
    }

    /** The adapter a step would train on this layer, or null (no active adapter, or adapters disabled). */
    private static LoraAdapter trainedAdapter(LoraTrainable layer) {
        String name = layer.activeAdapter();
        if (name == null || !layer.adaptersEnabled()) {
            return null;
        }
        return layer.adapter(name);
    }

    /** "layer 3" for layer trainers, "module 'x.q_proj' (layer 3)" for model trainers. */
    private String label(int i) {
        return overModel ? "module '" + names.get(i) + "' (layer " + i + ")" : "layer " + i;
    }

    private static double checkedNorm(String label, LoraAdapter adapter, String what, INDArray grad) {
        double n = grad.norm2Number().doubleValue();
        if (Double.isFinite(n)) {
            return n;
        }
        if (grad.isNaN().any() || grad.isInfinite().any()) {
            throw new IllegalStateException(label + ", adapter '" + adapter.name() + "': " + what
                    + " expected finite values, found NaN or infinity; step refused, nothing was changed");
        }
        // Finite entries whose squares overflow the data type: take the norm in double.
        return grad.castTo(DataType.DOUBLE).norm2Number().doubleValue();
    }

    private AdapterState stateOf(LoraTrainable layer, LoraAdapter adapter) {
        return states.computeIfAbsent(adapter, a -> AdapterState.create(updater, layer, a));
    }

    private static boolean hasAdapter(LoraTrainable layer, LoraAdapter adapter) {
        return layer.adapterNames().contains(adapter.name()) && layer.adapter(adapter.name()) == adapter;
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
         * {@code new Sgd(new StepSchedule(ScheduleType.ITERATION, 0.1, 0.5, 100))}. Cloned now (ND4J's configurations
         * are mutable: {@code setLearningRate}), so changing {@code updater} afterwards changes neither this builder
         * nor the trainers it builds; each trainer keeps a clone of its own.
         *
         * @param updater the updater configuration, not null
         * @return this builder
         * @throws NullPointerException if {@code updater} is null
         */
        public Builder updater(IUpdater updater) {
            this.updater = Objects.requireNonNull(updater, "updater must not be null").clone();
            return this;
        }

        /**
         * Clip the global L2 norm of all trained gradients to {@code maxNorm} (finite, {@code > 0}). Default: off.
         *
         * @param maxNorm the largest global L2 norm a step applies
         * @return this builder
         * @throws IllegalArgumentException if {@code maxNorm} is not finite and positive
         */
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
         *
         * @param wd the decay coefficient; 0 turns it off
         * @return this builder
         * @throws IllegalArgumentException if {@code wd} is negative, NaN or infinite
         */
        public Builder weightDecay(double wd) {
            if (!(wd >= 0) || Double.isInfinite(wd)) {
                throw new IllegalArgumentException("weightDecay must be finite and >= 0, got " + wd);
            }
            this.weightDecay = wd;
            return this;
        }

        /**
         * A trainer over {@code layers}; see {@link #build(List)}.
         *
         * @param layers the layers whose active adapters the trainer updates
         * @return the trainer
         * @throws NullPointerException     if {@code layers} is null
         * @throws IllegalStateException    if no updater was set
         * @throws IllegalArgumentException for no layers, a null or repeated layer
         */
        public LoraTrainer build(LoraTrainable... layers) {
            Objects.requireNonNull(layers, "layers must not be null");
            return build(Arrays.asList(layers));
        }

        /**
         * A trainer over {@code layers} (at least one, no nulls, no layer twice).
         *
         * @param layers the layers whose active adapters the trainer updates, in this order
         * @return the trainer
         * @throws IllegalStateException    if no updater was set
         * @throws NullPointerException     if {@code layers} is null
         * @throws IllegalArgumentException for an empty list, a null or repeated layer
         */
        public LoraTrainer build(List<? extends LoraTrainable> layers) {
            Map<String, LoraTrainable> indexed = indexedLayers(layers);
            requireUpdater();
            return new LoraTrainer(this, indexed, false);
        }

        /**
         * A trainer over every targeted module of {@code model} that has a backward pass, as they are now: the linear
         * modules ({@link LoraModel#loraModules()}) and the embeddings ({@link LoraModel#loraEmbeddings()}), in model
         * order ({@link LoraModel#modulePaths()}). Each step trains each module's active adapter. Its
         * {@link #layerNames()} are the module paths, which {@link #saveState} uses as keys. Conv2d modules
         * ({@link LoraModel#loraConvs()}) have no backward pass and are not trained.
         *
         * @param model a model with LoRA applied (or loaded); its targeted modules are read once, here
         * @return the trainer
         * @throws IllegalStateException if no updater was set, or LoRA was not applied to {@code model}
         */
        public LoraTrainer build(LoraModel model) {
            Objects.requireNonNull(model, "model must not be null");
            Map<String, LoraTrainable> modules = modelLayers(model);
            requireUpdater();
            return new LoraTrainer(this, modules, true);
        }

        private void requireUpdater() {
            if (updater == null) {
                throw new IllegalStateException("updater is required: call updater(new Adam(...)) before build");
            }
        }
    }

    /** The model's targeted linear and embedding modules, path to layer, in model order. */
    private static Map<String, LoraTrainable> modelLayers(LoraModel model) {
        Map<String, LoraTrainable> modules = new LinkedHashMap<>();
        for (String path : model.modulePaths()) {
            LoraTrainable layer = model.loraModules().containsKey(path) ? model.loraModules().get(path)
                    : model.loraEmbeddings().get(path);
            if (layer != null) {
                modules.put(path, layer);
            }
        }
        if (modules.isEmpty()) {
            throw new IllegalStateException("the model has no LoRA modules to train; call applyLora(config, "
                    + "targetModules) or load(dir, name) first");
        }
        return modules;
    }

    /** {@code "0" -> layers[0], ...}, after checking for an empty list, nulls and repeats. */
    private static Map<String, LoraTrainable> indexedLayers(List<? extends LoraTrainable> layers) {
        Objects.requireNonNull(layers, "layers must not be null");
        if (layers.isEmpty()) {
            throw new IllegalArgumentException("layers: expected at least one layer, got none");
        }
        Map<LoraTrainable, Integer> seen = new IdentityHashMap<>();
        Map<String, LoraTrainable> indexed = new LinkedHashMap<>();
        for (int i = 0; i < layers.size(); i++) {
            LoraTrainable l = layers.get(i);
            if (l == null) {
                throw new IllegalArgumentException("layers[" + i + "] is null");
            }
            Integer first = seen.putIfAbsent(l, i);
            if (first != null) {
                throw new IllegalArgumentException("layers[" + i + "] is the same layer as layers[" + first
                        + "]; each layer may appear once (it would be stepped twice)");
            }
            indexed.put(Integer.toString(i), l);
        }
        return indexed;
    }
}
