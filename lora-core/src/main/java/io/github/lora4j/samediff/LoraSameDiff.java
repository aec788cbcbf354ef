package io.github.lora4j.samediff;

import io.github.lora4j.InitialAdapter;
import io.github.lora4j.LoraConfig;
import io.github.lora4j.LoraInit;
import io.github.lora4j.LoraLinear;
import io.github.lora4j.MergeMode;
import io.github.lora4j.SharedMemory;
import io.github.lora4j.WeightLayout;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.HashMap;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.Set;
import java.util.regex.Pattern;
import org.nd4j.autodiff.samediff.SDVariable;
import org.nd4j.autodiff.samediff.SameDiff;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.learning.GradientUpdater;

/**
 * LoRA on one weight of a {@link SameDiff} graph: every matmul-type op that reads {@code W} computes
 * {@code x·W(ᵀ) + s·(x·Aᵀ)·Bᵀ}, with {@code W} a graph <em>constant</em> (no gradient, never updated) and
 * {@code A [r, in]}, {@code B [out, r]} trainable <em>variables</em>, so {@code SameDiff.fit} trains the adapter
 * alone. The low-rank path is two thin products; {@code W + s·B·A} is never formed per step.
 *
 * <p>Two ways in:
 * <ul>
 *   <li>{@link #apply(SameDiff, LoraConfig, String...)} adapts weights an existing graph already has (built with
 *       {@code sd.nn().linear}, {@code mmul}, or loaded from a file) and returns a {@link LoraSameDiffModel};</li>
 *   <li>{@link #linear} adds a new LoRA linear layer from arrays.</li>
 * </ul>
 *
 * <pre>{@code
 * SameDiff sd = SameDiff.create();
 * SDVariable x = sd.placeHolder("x", DataType.FLOAT, -1, in);
 * LoraSameDiff q = LoraSameDiff.linear(sd, "q_proj", x, w, b, LoraConfig.builder().rank(8).alpha(16).build());
 * SDVariable y = q.output();                                  // [n, out], named "q_proj"
 * ... loss, sd.setTrainingConfig(...), sd.fit(...) ...
 * q.merge();                                                   // W += s·B·A in place; the LoRA path is bypassed
 * }</pre>
 *
 * <h2>Names</h2>
 * For weight variable {@code W} the <em>module name</em> is {@code W}'s name without a trailing {@code "/weight"}
 * or {@code ".weight"} (so {@code q_proj/weight} gives {@code q_proj}, PyTorch-style
 * {@code model.layers.0.q_proj.weight} gives {@code model.layers.0.q_proj}); it names the adapter in PEFT files.
 * The new variables are {@code <module>/lora_A}, {@code /lora_B}, {@code /lora_scaling} (the scalar {@code s}), and
 * per adapted op {@code /lora_base} (the op's own output, renamed), {@code /lora_u}, {@code /lora_up},
 * {@code /lora_delta} (suffixed {@code _1}, {@code _2}, ... from the second op on); the new ops are named like
 * their outputs. The adapted op's output name now holds {@code base + delta}, so code that asks the graph for it
 * gets the LoRA output.
 *
 * <h2>Who may change what: W is shared, never copied</h2>
 * The graph keeps {@code W} under the very array object it had ({@link #linear}: the caller's {@code w}, unless it
 * is a view, which SameDiff itself copies). lora4j never copies {@code W}; {@code fit} never writes it (it is a
 * constant). Only {@link #merge()} / {@link #unmerge()} write it, in place, and they keep the graph consistent:
 * while merged, {@code s} in the graph is 0 (the LoRA path is bypassed, so the adapter is applied once, by
 * {@code W}) and {@code A}, {@code B} are constants (so training cannot change what unmerge subtracts). Code that
 * wraps the graph's own {@code W} array in a {@link LoraLinear} and merges that layer would apply the adapter
 * twice; {@link #exportTo} therefore refuses a layer over the graph's {@code W}, and {@link #toLoraLinear()} wraps a
 * copy.
 *
 * <h2>Dropout</h2>
 * A configuration with {@link LoraConfig#dropout() dropout} {@code p > 0} puts PEFT's LoRA dropout into the graph: the
 * LoRA path of each adapted op reads {@code <module>/lora_dropped = x ⊙ <module>/lora_drop_mask} (suffixed like the
 * other names from the second op on), the adapted op itself reads {@code x}. The mask op is {@code onesLike(x)}; a
 * listener added to the graph ({@code sd.getListeners()}) overwrites its output in SameDiff's training operation
 * ({@code fit}, {@code calculateGradients}) with {@code m/(1 − p)}:
 * <ul>
 *   <li>one mask per training step, which the step's forward and backward share;</li>
 *   <li>the masks of lora-core's {@link io.github.lora4j.DropoutStream} for the adapter's configuration (a
 *       {@code LoraLinear} with it draws the same), so training repeats bit for bit from the configuration's seed;</li>
 *   <li>in every other operation ({@code output}, evaluation, validation during fit) the mask is all ones and the
 *       output is exactly the undropped one; the two ops still run (a cost of two element-wise ops of the input's
 *       size per adapted op);</li>
 *   <li>{@code sd.setListeners(...)} replaces the listener, and a graph saved and loaded again has none: dropout then
 *       stays off. Add listeners with {@code addListeners}.</li>
 * </ul>
 *
 * <h2>DoRA</h2>
 * With {@link LoraConfig#useDora()} each adapted weight also gets DoRA's trainable magnitude
 * {@code <module>/lora_magnitude_vector} {@code [out]} ({@link #magnitudeVariable()}), and each adapted op's output
 * becomes {@code (m / ‖W + s·B·A‖_row) ⊙ (base + delta)} (the bias of a linear op kept outside), the norm through a
 * {@code stop_gradient} as PEFT detaches it, built from {@code W Aᵀ} and {@code A Aᵀ} without an {@code [out, in]}
 * temporary (variables {@code <module>/dora_...}). {@code fit} trains {@code m} with {@code A} and {@code B}; merge
 * folds {@code (m / ‖W + s·B·A‖) ⊙ (W + s·B·A)} into {@code W} exactly and turns the factor off in the graph
 * ({@code <module>/dora_gate} = 0); save and load use PEFT's DoRA files. DoRA with dropout is refused (PEFT then
 * recomputes the base product on the dropped-out input, which the graph does not build).
 *
 * <p>Not thread-safe: change the graph from one thread, while nothing else runs it.
 */
public final class LoraSameDiff {

    private final SameDiff sd;
    private final String weightName;
    private final String module;
    private final WeightLayout layout;
    private final SDVariable weight;
    private final SDVariable bias;
    private final SDVariable loraA;
    private final SDVariable loraB;
    private final SDVariable scaling;
    /** DoRA's magnitude variable and its gate constant, or null for plain LoRA. */
    private final SDVariable magnitude;
    private final SDVariable gate;
    private final SDVariable output;
    private final List<GraphSurgery.Inserted> inserted;
    /** The LoRA dropout before each adapted op's path, empty while the adapter has none. */
    private List<GraphSurgery.DropoutPath> dropouts;
    /** Draws the masks in training; null while the adapter has none. */
    private DropoutMasks dropoutMasks;
    private LoraConfig config;
    private LoraLinear merged;
    private Map<String, GradientUpdater<?>> parkedUpdaters = Map.of();
    private boolean unloaded;

    private LoraSameDiff(SameDiff sd, Plan.Target t, SDVariable bias, SDVariable output) {
        this.sd = sd;
        this.weightName = t.weight();
        this.module = t.module();
        this.layout = t.layout();
        this.config = t.config();
        this.weight = sd.getVariable(t.weight());
        this.loraA = sd.getVariable(t.a());
        this.loraB = sd.getVariable(t.b());
        this.scaling = sd.getVariable(t.scaling());
        this.magnitude = t.config().useDora() ? sd.getVariable(DoraGraph.magnitude(t.module())) : null;
        this.gate = t.config().useDora() ? sd.getVariable(DoraGraph.gate(t.module())) : null;
        this.inserted = List.copyOf(t.inserted());
        this.bias = bias;
        this.output = output;
        this.dropouts = List.of();
        if (!t.dropouts().isEmpty()) {
            startDropout(t.dropouts());
        }
    }

    /** Registers the dropout ops already in the graph and the listener that draws their masks. */
    private void startDropout(List<GraphSurgery.DropoutPath> paths) {
        this.dropouts = List.copyOf(paths);
        this.dropoutMasks = new DropoutMasks(paths, config);
        sd.addListeners(dropoutMasks);
    }

    // ---------------------------------------------------------------- applying to an existing graph

    /**
     * Adds LoRA to the weights of {@code sd} that {@code weightNames} name, PEFT's way: a weight variable matches
     * a name when its variable name or its module name equals it or ends with {@code "." + name} or
     * {@code "/" + name}. Every other trainable variable becomes a constant too (PEFT freezes the base model); see
     * {@link #builder(LoraConfig)} to keep some trainable. {@code A} is drawn per weight from
     * {@link LoraConfig#forModule config.forModule(module name)}, as {@code LoraModel} does, {@code B = 0}: outputs do not change, bit for bit.
     *
     * <p>Works on a graph trained before in this JVM: the frozen variables' optimizer state is dropped and
     * {@code A}, {@code B} get fresh state (SameDiff's {@code convertToConstants} / {@code convertToVariables}), so
     * the next {@code fit} trains the adapters; the iteration count of the training config continues.
     *
     * @param sd          the graph; changed in place
     * @param config      rank, alpha, rsLoRA, init and seed; dropout acts in training only (see the class doc)
     * @param weightNames target names (at least one)
     * @return the adapted weights
     * @throws IllegalArgumentException if a name matches nothing (the message lists the 2-D weights), a matched
     *                                  weight is not 2-D, not FLOAT/DOUBLE, not finite, or read by an op that is not
     *                                  mmul / linear, or its input has another data type, or a new
     *                                  variable's name is taken; the graph is then
     *                                  unchanged
     * @throws IllegalStateException    if the graph already has lora4j adapters (from an earlier apply, also one saved
     *                                  with the graph, or from {@link #linear}): a second apply would freeze them and
     *                                  could adapt their own A and B; apply every target in one call, or unload the
     *                                  first adapters before; the graph is then unchanged
     */
    public static LoraSameDiffModel apply(SameDiff sd, LoraConfig config, String... weightNames) {
        Objects.requireNonNull(weightNames, "weightNames must not be null");
        return builder(config).targets(weightNames).apply(sd);
    }

    /**
     * Like {@link #apply(SameDiff, LoraConfig, String...)} for the weights whose variable name or module name
     * matches {@code weightRegex} whole (PEFT's {@code target_modules} given as a string: {@code re.fullmatch}).
     *
     * @param sd          the graph; changed in place
     * @param config      rank, alpha, rsLoRA, init and seed; dropout acts in training only (see the class doc)
     * @param weightRegex matched against each 2-D weight's variable name and module name, whole
     * @return the adapted weights
     * @throws IllegalArgumentException as {@link #apply(SameDiff, LoraConfig, String...)}, with "matches nothing" for
     *                                  the regex; the graph is then unchanged
     * @throws IllegalStateException    as {@link #apply(SameDiff, LoraConfig, String...)}, for a graph that already has
     *                                  adapters
     * @throws NullPointerException     if an argument is {@code null}
     */
    public static LoraSameDiffModel apply(SameDiff sd, LoraConfig config, Pattern weightRegex) {
        return builder(config).targets(weightRegex).apply(sd);
    }

    /**
     * A builder for the less common choices of {@link #apply}: which variables stay trainable.
     *
     * @param config rank, alpha, rsLoRA, init and seed of every adapter the builder adds; dropout acts in training only (see the class doc)
     * @return a new builder without targets and with nothing kept trainable
     * @throws NullPointerException if {@code config} is {@code null}
     */
    public static Builder builder(LoraConfig config) {
        return new Builder(Objects.requireNonNull(config, "config must not be null"));
    }

    /** Choices for {@link #apply}; one builder may be applied to several graphs. */
    public static final class Builder {
        private final LoraConfig config;
        private List<String> names;
        private Pattern regex;
        private List<String> keepTrainable = List.of();

        private Builder(LoraConfig config) {
            this.config = config;
        }

        /**
         * Target weights by name (PEFT's list rule, see {@link LoraSameDiff#apply(SameDiff, LoraConfig, String...)}).
         *
         * @param weightNames target names (at least one at apply time); copied; replaces a regex given before
         * @return this builder
         * @throws NullPointerException if {@code weightNames} or one of its elements is {@code null}
         */
        public Builder targets(String... weightNames) {
            Objects.requireNonNull(weightNames, "weightNames must not be null");
            this.names = List.of(weightNames);
            this.regex = null;
            return this;
        }

        /**
         * Target the weights whose variable or module name matches {@code weightRegex} whole.
         *
         * @param weightRegex the pattern a weight's variable or module name must match whole; replaces names given before
         * @return this builder
         * @throws NullPointerException if {@code weightRegex} is {@code null}
         */
        public Builder targets(Pattern weightRegex) {
            this.regex = Objects.requireNonNull(weightRegex, "weightRegex must not be null");
            this.names = null;
            return this;
        }

        /**
         * Variables (exact names) that stay trainable although they are not adapters, like PEFT's
         * {@code modules_to_save} but training them in place: e.g. a new classification head. They must be
         * trainable variables of the graph and not targeted weights.
         *
         * @param variableNames exact variable names; copied; replaces names given before
         * @return this builder
         * @throws NullPointerException if {@code variableNames} or one of its elements is {@code null}
         */
        public Builder keepTrainable(String... variableNames) {
            this.keepTrainable = List.of(Objects.requireNonNull(variableNames, "variableNames must not be null"));
            return this;
        }

        /**
         * Applies LoRA to {@code sd}; see {@link LoraSameDiff#apply(SameDiff, LoraConfig, String...)}.
         *
         * @param sd the graph; changed in place, or not at all if this throws
         * @return the adapted weights, by weight variable name
         * @throws IllegalArgumentException as there, or for a {@link #keepTrainable} name that is not a trainable
         *                                  variable; the graph is then unchanged
         * @throws IllegalStateException    if no targets were given, or the graph already has adapters (as there)
         */
        public LoraSameDiffModel apply(SameDiff sd) {
            Objects.requireNonNull(sd, "sd must not be null");
            if (names == null && regex == null) {
                throw new IllegalStateException("no targets; call targets(...) first");
            }
            Plan plan = Plan.forTargets(sd, config, names, regex, keepTrainable);
            plan.execute();
            Map<String, LoraSameDiff> adapted = new LinkedHashMap<>();
            for (Plan.Target t : plan.targets()) {
                adapted.put(t.weight(), new LoraSameDiff(sd, t, null, null));
            }
            return new LoraSameDiffModel(sd, adapted, plan.frozen());
        }
    }

    // ---------------------------------------------------------------- a new layer

    /**
     * {@link #linear(SameDiff, String, SDVariable, INDArray, INDArray, LoraConfig, WeightLayout)} with {@code W [out, in]}.
     *
     * @param sd     the graph
     * @param name   output variable name and prefix of the layer's variables: not blank, without {@code ':'}
     * @param x      input {@code [n, in]} (rank 2) of W's data type
     * @param w      frozen weight {@code [out, in]}, FLOAT or DOUBLE; becomes a constant holding this very array
     * @param b      frozen bias {@code [out]}, or null; becomes a constant
     * @param config adapter configuration (rank, alpha, rsLoRA, init, seed); dropout acts in training only (see the class doc)
     * @return the new layer; its {@link #output()} is the variable {@code name}
     * @throws IllegalArgumentException as {@link #linear(SameDiff, String, SDVariable, INDArray, INDArray, LoraConfig,
     *                                  WeightLayout)}; {@code sd} is then unchanged
     */
    public static LoraSameDiff linear(SameDiff sd, String name, SDVariable x, INDArray w, INDArray b, LoraConfig config) {
        return linear(sd, name, x, w, b, config, WeightLayout.OUT_IN);
    }

    /**
     * Adds a LoRA linear layer {@code out = x W^T + b + s·(x A^T) B^T} to {@code sd}. {@code A} starts as
     * {@link LoraLinear#wrap} would draw it for the same configuration (same seed, same values), {@code B = 0}; so
     * before training the graph computes exactly the base layer. Variable names are {@code name + "/weight"},
     * {@code "/bias"}, {@code "/lora_A"}, {@code "/lora_B"} (and the others listed in the class doc), and
     * {@code name} for the output. Other variables of the graph are left as they are.
     *
     * @param sd     the graph
     * @param name   output variable name and prefix of the layer's variables: not blank, without {@code ':'}
     *               (SameDiff's op-output syntax, {@code "op:1"}); none of the names may exist yet
     * @param x      input {@code [n, in]} (rank 2) of W's data type
     * @param w      frozen weight, {@code [out, in]} or, with {@link WeightLayout#IN_OUT}, {@code [in, out]}; FLOAT
     *               or DOUBLE; becomes a constant holding this very array (see the class doc)
     * @param b      frozen bias {@code [out]}, or null; becomes a constant
     * @param config adapter configuration (rank, alpha, rsLoRA, init, seed); dropout acts in training only (see the class doc)
     * @param layout how {@code w} is stored; IN_OUT is handled by mmul's transpose flag, not by a copy
     * @return the new layer; its {@link #output()} is the variable {@code name}
     * @throws IllegalArgumentException for a bad name, weight, bias or config, an input of the wrong type or width,
     *                                  or a name already used in {@code sd}; {@code sd} is then unchanged
     * @throws NullPointerException     if an argument but {@code b} is {@code null}
     */
    public static LoraSameDiff linear(SameDiff sd, String name, SDVariable x, INDArray w, INDArray b,
                                      LoraConfig config, WeightLayout layout) {
        Objects.requireNonNull(sd, "sd must not be null");
        Objects.requireNonNull(name, "name must not be null");
        Objects.requireNonNull(x, "x must not be null");
        Objects.requireNonNull(config, "config must not be null");
        Objects.requireNonNull(layout, "layout must not be null");
        if (name.isBlank() || name.indexOf(':') >= 0) {
            throw new IllegalArgumentException("layer name: expected a non-blank name without ':' (SameDiff reads"
                    + " \"op:1\" as output 1 of op \"op\"), got '" + name + "'");
        }
        Plan.requireDoraWithoutDropout(config);
        // Validates W, b and the rank exactly as the eager layer does (LoraLinear.wrap's checks, no layer built).
        InitialAdapter.of(w, b, layout, config);
        long in = layout == WeightLayout.OUT_IN ? w.columns() : w.rows();
        long out = layout == WeightLayout.OUT_IN ? w.rows() : w.columns();
        if (x.dataType() != w.dataType()) {
            throw new IllegalArgumentException("x data type: expected " + w.dataType() + " (the weight's), got "
                    + x.dataType());
        }
        long[] xShape = x.getShape();
        if (xShape != null && (xShape.length != 2 || (xShape[1] >= 0 && xShape[1] != in))) {
            throw new IllegalArgumentException("x shape: expected [n, " + in + "], got "
                    + Arrays.toString(xShape));
        }
        // Without a bias the product is the layer's output: its name moves to base + delta.
        String matmul = b == null ? name : name + "/matmul";
        List<String> own = new ArrayList<>(List.of(name, name + "/weight", name + "/bias", name + "/matmul"));
        own.addAll(Plan.namesFor(name, 1));
        if (config.useDora()) {
            own.addAll(DoraGraph.namesFor(name, 1));
        }
        if (config.dropout() > 0) {
            own.addAll(Plan.dropoutPaths(name, 1).get(0).names());
        }
        for (String v : own) {
            if (sd.hasVariable(v)) {
                throw new IllegalArgumentException("variable '" + v + "' already exists in this SameDiff graph");
            }
        }
        SDVariable wc = sd.constant(name + "/weight", w);
        SDVariable bc = b == null ? null : sd.constant(name + "/bias", b.reshape(1, out));
        SDVariable base = sd.mmul(matmul, x, wc, false, layout == WeightLayout.OUT_IN, false);    // x W^T   [n, out]
        if (bc != null) {
            base.add(name, bc);
        }
        // The seed is the config's own, so A is the one LoraLinear.wrap draws (InitialAdapter, in Plan.target).
        Plan.Target t = Plan.target(sd, wc.name(), config, new HashSet<>());
        new Plan(sd, List.of(t), List.of()).execute();
        return new LoraSameDiff(sd, t, bc, sd.getVariable(name));
    }

    // ---------------------------------------------------------------- accessors

    /**
     * The output {@code [n, out]} of a layer made by {@link #linear}, named like the layer; null after {@link #apply}.
     *
     * @return the output variable of the graph (not a copy), or {@code null} for an adapter added by {@link #apply}
     */
    public SDVariable output() {
        return output;
    }

    /**
     * The module name: the weight's variable name without {@code "/weight"} / {@code ".weight"}.
     *
     * @return the module name
     */
    public String name() {
        return module;
    }

    /**
     * The adapted weight's variable name.
     *
     * @return the weight's variable name in the graph
     */
    public String weightName() {
        return weightName;
    }

    /**
     * The constant holding {@code W}.
     *
     * @return the graph's constant (the variable itself, not a copy)
     */
    public SDVariable weight() {
        return weight;
    }

    /**
     * The constant holding the bias as {@code [1, out]} of a layer made by {@link #linear}, or null.
     *
     * @return the graph's bias constant (the variable itself), or {@code null}
     */
    public SDVariable bias() {
        return bias;
    }

    /**
     * The trainable variable {@code A [r, in]} (a constant while merged).
     *
     * @return the graph's variable (the variable itself, not a copy)
     * @throws IllegalStateException after {@link LoraSameDiffModel#unload()} (the variable is no longer in the graph)
     */
    public SDVariable loraA() {
        requireLoaded();
        return loraA;
    }

    /**
     * The trainable variable {@code B [out, r]} (a constant while merged).
     *
     * @return the graph's variable (the variable itself, not a copy)
     * @throws IllegalStateException after {@link LoraSameDiffModel#unload()} (the variable is no longer in the graph)
     */
    public SDVariable loraB() {
        requireLoaded();
        return loraB;
    }

    /**
     * The scalar constant {@code s} the LoRA path is multiplied by: {@code config().scaling()}, 0 while merged.
     *
     * @return the graph's scalar constant (the variable itself)
     * @throws IllegalStateException after {@link LoraSameDiffModel#unload()} (the constant is no longer in the graph)
     */
    public SDVariable scalingVariable() {
        requireLoaded();
        return scaling;
    }

    /**
     * DoRA's trainable magnitude {@code <module>/lora_magnitude_vector} {@code [out]} (a constant while merged).
     *
     * @return the graph's variable (the variable itself), or {@code null} for a plain LoRA adapter
     * @throws IllegalStateException after {@link LoraSameDiffModel#unload()}
     */
    public SDVariable magnitudeVariable() {
        requireLoaded();
        return magnitude;
    }

    /**
     * A copy of the graph's current DoRA magnitude {@code [out]}.
     *
     * @return a new array, or {@code null} for a plain LoRA adapter
     * @throws IllegalStateException after {@link LoraSameDiffModel#unload()}
     */
    public INDArray currentMagnitude() {
        requireLoaded();
        return magnitude == null ? null : sd.getArrForVarName(magnitude.name()).dup('c');
    }

    /**
     * The adapter configuration (after {@link LoraSameDiffModel#load}, the file's).
     *
     * @return the configuration; immutable
     */
    public LoraConfig config() {
        return config;
    }

    /**
     * How {@code W} is stored: {@code [out, in]} or {@code [in, out]}, as the ops that read it use it.
     *
     * @return the layout of {@code W}
     */
    public WeightLayout layout() {
        return layout;
    }

    /**
     * Names of the ops that read {@code W} and were adapted. An op that was named like its output (SameDiff's
     * default for unnamed products, e.g. {@code matmul}) is renamed with that output to {@code <module>/lora_base}.
     *
     * @return an immutable list of op names, in the order they were adapted
     * @throws IllegalStateException after {@link LoraSameDiffModel#unload()}
     */
    public List<String> adaptedOps() {
        requireLoaded();
        return inserted.stream().map(i -> sd.getVariables().get(i.base()).getOutputOfOp()).toList();
    }

    /**
     * A copy of the graph's current {@code A [r, in]}.
     *
     * @return a new c-order array; modifying it does not change the graph
     * @throws IllegalStateException after {@link LoraSameDiffModel#unload()}
     */
    public INDArray currentA() {
        requireLoaded();
        return sd.getArrForVarName(loraA.name()).dup('c');
    }

    /**
     * A copy of the graph's current {@code B [out, r]}.
     *
     * @return a new c-order array; modifying it does not change the graph
     * @throws IllegalStateException after {@link LoraSameDiffModel#unload()}
     */
    public INDArray currentB() {
        requireLoaded();
        return sd.getArrForVarName(loraB.name()).dup('c');
    }

    /** Elements of {@code A} and {@code B}, {@code r·(in + out)} (DoRA: {@code + out}), without copying them. */
    long parameterCount() {
        requireLoaded();
        return sd.getArrForVarName(loraA.name()).length() + sd.getArrForVarName(loraB.name()).length()
                + (magnitude == null ? 0 : sd.getArrForVarName(magnitude.name()).length());
    }

    /** A, B and, for DoRA, m: the variables training changes. */
    private List<SDVariable> trainables() {
        return magnitude == null ? List.of(loraA, loraB) : List.of(loraA, loraB, magnitude);
    }

    /** Copies the graph's A, B (and m) into adapter {@code name} of {@code layer}. */
    private void copyInto(LoraLinear layer, String name) {
        if (magnitude == null) {
            layer.setAdapterWeights(name, currentA(), currentB());
        } else {
            layer.setAdapterWeights(name, currentA(), currentB(), currentMagnitude());
        }
    }

    /** The graph's own {@code W} array (not a copy; see the class doc). */
    INDArray weightArray() {
        return sd.getArrForVarName(weightName);
    }

    // ---------------------------------------------------------------- eager layers

    /**
     * Copies the graph's current {@code A} and {@code B} into adapter {@code adapterName} of {@code layer} (see
     * {@link LoraLinear#setAdapterWeights}); the layer must have that adapter with this adapter's shapes.
     *
     * @param layer       the eager layer to write into; its adapter {@code adapterName} is changed, its {@code W} is not
     * @param adapterName an existing, unmerged adapter of {@code layer} of rank {@code r} and the graph's data type
     * @throws IllegalArgumentException for an unknown adapter or mismatched shapes or data type, or a layer whose
     *                                  weight shares memory with the graph's {@code W} (merging it would apply the
     *                                  adapter twice: once in {@code W}, once on the graph's LoRA path)
     * @throws IllegalStateException    if that adapter is merged
     * @throws IllegalStateException    after {@link LoraSameDiffModel#unload()}
     * @throws NullPointerException     if {@code layer} is {@code null}
     */
    public void exportTo(LoraLinear layer, String adapterName) {
        Objects.requireNonNull(layer, "layer must not be null");
        requireLoaded();
        if (SharedMemory.overlap(layer.weight(), weightArray())) {
            throw new IllegalArgumentException("the layer wraps the graph's own W of '" + weightName + "'; merging it"
                    + " would apply the adapter twice (in W and on the graph's LoRA path). Merge with"
                    + " LoraSameDiff.merge(), or wrap a copy of W (toLoraLinear() does)");
        }
        copyInto(layer, adapterName);
    }

    /**
     * A new {@link LoraLinear} over a <em>copy</em> of {@code W} (and of the bias of a {@link #linear} layer) whose
     * {@value LoraLinear#DEFAULT_ADAPTER} adapter holds the graph's current {@code A} and {@code B}: merging it
     * never touches the graph.
     *
     * @return a new, independent layer; its {@value LoraLinear#DEFAULT_ADAPTER} adapter is active
     * @throws IllegalStateException while merged (the copy would hold the adapter already)
     */
    public LoraLinear toLoraLinear() {
        requireUnmerged("copy W into a LoraLinear");
        INDArray b = bias == null ? null : sd.getArrForVarName(bias.name()).dup('c');
        LoraLinear layer = LoraLinear.wrap(weightArray().dup('c'), b, config, layout);
        copyInto(layer, LoraLinear.DEFAULT_ADAPTER);
        return layer;
    }

    // ---------------------------------------------------------------- merge

    /**
     * Folds the adapter into the graph's {@code W} in place, {@code W += s·B·A} (transposed for
     * {@link WeightLayout#IN_OUT}), by {@link LoraLinear}'s {@link MergeMode#EXACT exact} merge, so that
     * {@link #unmerge()} restores {@code W} bit for bit. The graph's LoRA path is bypassed meanwhile ({@code s = 0}
     * in the graph) and {@code A}, {@code B} become constants, their optimizer state kept aside for unmerge.
     *
     * @throws IllegalStateException if already merged, after unload, or if {@code A} or {@code B} is not finite or
     *                               the merged {@code W} would not be; the graph is then unchanged
     */
    public void merge() {
        requireUnmerged("merge");
        // A LoraLinear over the graph's W (referenced) is the merge's state holder, not a throwaway: it keeps the
        // exact-unmerge record, W's claim in the registry of merged weights and the DoRA factors until unmerge().
        LoraLinear layer = LoraLinear.base(weightArray(), null, layout);
        layer.addAdapter(LoraLinear.DEFAULT_ADAPTER, config.toBuilder().init(LoraInit.ZERO).build());
        try {
            copyInto(layer, LoraLinear.DEFAULT_ADAPTER);
        } catch (IllegalArgumentException e) {
            throw new IllegalStateException("cannot merge '" + weightName + "': " + e.getMessage(), e);
        }
        layer.setActiveAdapter(LoraLinear.DEFAULT_ADAPTER);
        layer.merge(MergeMode.EXACT);
        merged = layer;
        sd.getArrForVarName(scaling.name()).assign(0);
        if (gate != null) {
            sd.getArrForVarName(gate.name()).assign(0);          // DoRA's factor is inside W now
        }
        parkedUpdaters = freezeKeepingState(sd, trainables());
    }

    /**
     * Takes the adapter out of {@code W} again, bit-exactly, and turns the graph's LoRA path and the training of
     * {@code A}, {@code B} back on (with the optimizer state they had).
     *
     * @throws IllegalStateException if not merged, or after {@link LoraSameDiffModel#unload()}
     */
    public void unmerge() {
        requireLoaded();
        if (merged == null) {
            throw new IllegalStateException("'" + weightName + "' is not merged; nothing to unmerge");
        }
        merged.unmerge();
        merged = null;
        sd.getArrForVarName(scaling.name()).assign(config.scaling());
        if (gate != null) {
            sd.getArrForVarName(gate.name()).assign(1);
        }
        thaw(sd, trainables(), parkedUpdaters);
        parkedUpdaters = Map.of();
    }

    /**
     * Whether the adapter is merged into {@code W}.
     *
     * @return {@code true} between {@link #merge()} and {@link #unmerge()}
     */
    public boolean isMerged() {
        return merged != null;
    }

    /**
     * Whether {@link LoraSameDiffModel#unload()} took this adapter out of the graph.
     *
     * @return {@code true} once unloaded; an unloaded adapter stays so
     */
    public boolean isUnloaded() {
        return unloaded;
    }

    /**
     * Checks, changing nothing, that {@link #setConfig} can take {@code c}: an adapter without dropout ops can get them
     * only if their names are free.
     *
     * @throws IllegalArgumentException naming the name taken
     */
    void checkConfig(LoraConfig c) {
        requireUnmerged("load an adapter into");
        Plan.requireDoraWithoutDropout(c);
        if (c.dropout() > 0 && dropouts.isEmpty()) {
            Plan.requireDropoutNamesFree(sd, module, Plan.dropoutPaths(module, inserted.size()), new HashSet<>());
        }
    }

    /**
     * Replaces the configuration (after {@link LoraSameDiffModel#load}, which calls {@link #checkConfig} first) and
     * sets the graph's {@code s} to its scaling; a dropout above 0 on an adapter without dropout ops adds them (SameDiff
     * then rebuilds its gradient function on the next fit).
     */
    void setConfig(LoraConfig c) {
        checkConfig(c);
        this.config = c;
        if (c.dropout() > 0 && dropouts.isEmpty()) {
            List<GraphSurgery.DropoutPath> paths = Plan.dropoutPaths(module, inserted.size());
            for (int k = 0; k < paths.size(); k++) {
                GraphSurgery.insertDropout(sd, inserted.get(k), paths.get(k));
            }
            startDropout(paths);
            sd.setLossVariables(sd.getLossVariables().toArray(new String[0]));   // drops the stale gradient function
        } else if (dropoutMasks != null) {
            dropoutMasks.setConfig(c);
        }
        sd.getArrForVarName(scaling.name()).assign(c.scaling());
    }

    /**
     * The LoRA dropout ops of this adapter, one path per adapted op.
     *
     * @return the dropout variables' names per adapted op (an empty list without dropout)
     */
    List<GraphSurgery.DropoutPath> dropoutPaths() {
        return dropouts;
    }

    /**
     * Checks that {@link #unload()} would go through, changing nothing.
     *
     * @throws IllegalStateException after unload, or if an op outside the LoRA path reads one of its variables (or
     *                               one is a loss variable, or was removed by hand)
     */
    void checkUnloadable() {
        requireLoaded();
        Set<String> doraOps = new HashSet<>();
        if (magnitude != null) {
            DoraGraph.checkRemovable(sd, module, inserted, weightName);
            for (String v : DoraGraph.namesFor(module, inserted.size())) {
                if (sd.hasVariable(v) && sd.getVariables().get(v).getOutputOfOp() != null) {
                    doraOps.add(sd.getVariables().get(v).getOutputOfOp());
                }
            }
        }
        GraphSurgery.checkRemovable(sd, weightName, inserted, dropouts,
                List.of(loraA.name(), loraB.name(), scaling.name()), doraOps);
    }

    /**
     * Takes the LoRA ops and variables out; W keeps what it holds. The model calls {@link #checkUnloadable()} for
     * every adapter first, so that no adapter is unloaded when another could not be.
     */
    void unload() {
        requireLoaded();
        if (merged != null) {
            merged.mergeAndUnload();     // W keeps the merged values; the record and W's merge claim are given back
            merged = null;
            thaw(sd, trainables(), parkedUpdaters);
        }
        sd.convertToConstants(trainables());                 // drops their optimizer state
        if (magnitude != null) {
            DoraGraph.remove(sd, module, inserted);
        }
        for (int i = dropouts.size() - 1; i >= 0; i--) {
            GraphSurgery.removeDropout(sd, inserted.get(i), dropouts.get(i));
        }
        if (dropoutMasks != null) {
            sd.getListeners().remove(dropoutMasks);
        }
        for (int i = inserted.size() - 1; i >= 0; i--) {
            GraphSurgery.remove(sd, inserted.get(i));
        }
        for (SDVariable v : List.of(loraA, loraB, scaling)) {
            GraphSurgery.removeVariable(sd, v.name());
        }
        unloaded = true;
    }

    private void requireLoaded() {
        if (unloaded) {
            throw new IllegalStateException("the adapter of '" + weightName + "' was unloaded from the graph");
        }
    }

    private void requireUnmerged(String what) {
        requireLoaded();
        if (merged != null) {
            throw new IllegalStateException("cannot " + what + " '" + weightName + "' while its adapter is merged into W;"
                    + " unmerge() first");
        }
    }

    /**
     * Makes {@code vars} constants, returning their optimizer state (SameDiff's {@code convertToConstants} would
     * close it) so that {@link #thaw} can give it back.
     */
    static Map<String, GradientUpdater<?>> freezeKeepingState(SameDiff sd, List<SDVariable> vars) {
        Map<String, GradientUpdater<?>> parked = new HashMap<>();
        if (sd.getUpdaterMap() != null) {
            for (SDVariable v : vars) {
                GradientUpdater<?> u = sd.getUpdaterMap().remove(v.name());
                if (u != null) {
                    parked.put(v.name(), u);
                }
            }
        }
        sd.convertToConstants(vars);
        return Collections.unmodifiableMap(parked);
    }

    /** Makes {@code vars} trainable again with the state {@link #freezeKeepingState} kept (fresh state if none). */
    static void thaw(SameDiff sd, List<SDVariable> vars, Map<String, GradientUpdater<?>> parked) {
        if (sd.isInitializedTraining() && sd.getUpdaterMap() != null) {
            parked.forEach(sd.getUpdaterMap()::putIfAbsent);
        }
        sd.convertToVariables(vars);
    }

    @Override
    public String toString() {
        return "LoraSameDiff{weight=" + weightName + ", module=" + module + ", layout=" + layout + ", r="
                + config.rank() + ", s=" + config.scaling() + ", ops=" + inserted.size() + ", merged=" + isMerged()
                + ", unloaded=" + unloaded + "}";
    }
}
