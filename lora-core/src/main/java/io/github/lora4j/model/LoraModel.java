package io.github.lora4j.model;

import io.github.lora4j.LoraConfig;
import io.github.lora4j.LoraLinear;
import io.github.lora4j.MergeMode;
import io.github.lora4j.WeightLayout;
import io.github.lora4j.io.PeftAdapterConfig;
import io.github.lora4j.io.PeftAdapterFiles;
import java.io.IOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Objects;
import java.util.function.Predicate;
import java.util.regex.Pattern;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * A model as PEFT sees it: an ordered map of named linear modules (module path such as
 * {@code model.layers.0.self_attn.q_proj} → frozen weight, optional bias, {@link WeightLayout}), to which LoRA
 * adapters are applied by target-module names or a regular expression, all at once.
 *
 * <pre>{@code
 * LoraModel model = LoraModel.builder()
 *         .linear("model.layers.0.self_attn.q_proj", wq, null)      // W [out, in]
 *         .linear("model.layers.0.self_attn.v_proj", wv, null)
 *         .linearInOut("model.layers.0.mlp.fc", wFc, bFc)           // W [in, out] (DL4J DenseLayer, GPT-2 Conv1D)
 *         .build();
 * model.applyLora(LoraConfig.builder().rank(8).alpha(16).build(), List.of("q_proj", "v_proj"));
 * System.out.println(model.trainableParametersReport());
 * INDArray y = model.forward("model.layers.0.self_attn.q_proj", x);
 * Map<String, INDArray> plain = model.mergeAndUnload();           // W + s·B·A per module, new arrays
 * }</pre>
 *
 * <h2>Matching target modules (PEFT's rule)</h2>
 * A list of names matches a module when its path equals a name or ends with {@code "." + name}; a
 * {@link Pattern} must match the whole path ({@code re.fullmatch}). Matching nothing is an error that lists the
 * available modules, as PEFT raises one.
 *
 * <h2>Who may change what</h2>
 * Weights and biases are referenced, not copied (the caller's arrays are the model's). Only {@link #merge()} and
 * {@link #unmerge()} write them, in place; {@link #mergeAndUnload()} returns new arrays and changes nothing.
 * Every module is a {@link LoraLinear} (untargeted ones without adapters, so they compute the plain layer), and
 * each module's own lock makes its forward safe against concurrent merges of that module. Model-wide changes
 * (apply, add/switch adapter, merge, unmerge, load) are not atomic for readers across modules: a forward on another
 * thread may see module 1 merged and module 2 not yet. Do model-wide changes while no forward runs.
 *
 * <h2>Errors</h2>
 * Bad arguments throw {@link IllegalArgumentException}, calls in the wrong state {@link IllegalStateException};
 * each names what was expected and what came, and leaves the model as it was.
 */
public final class LoraModel {

    /** Name of the adapter that {@link #applyLora} adds, as in PEFT. */
    public static final String DEFAULT_ADAPTER = LoraLinear.DEFAULT_ADAPTER;

    private final Map<String, LoraLinear> modules;
    private final Map<String, LoraLinear> targeted = new LinkedHashMap<>();
    private final List<String> targetModules = new ArrayList<>();
    private String targetRegex;

    private LoraModel(Map<String, LoraLinear> modules) {
        this.modules = modules;
    }

    /** A builder for the model's modules, in the order they are added. */
    public static Builder builder() {
        return new Builder();
    }

    // ---------------------------------------------------------------- modules

    /** All module paths, in insertion order. */
    public List<String> modulePaths() {
        return List.copyOf(modules.keySet());
    }

    /**
     * The layer at {@code path} (targeted or not): its weight and bias are the arrays given to the builder.
     *
     * @throws IllegalArgumentException for an unknown path, listing the available modules
     */
    public LoraLinear module(String path) {
        Objects.requireNonNull(path, "module path must not be null");
        LoraLinear m = modules.get(path);
        if (m == null) {
            throw new IllegalArgumentException("unknown module '" + path + "'; available modules: " + modules.keySet());
        }
        return m;
    }

    /**
     * The modules that carry LoRA adapters (those {@link #applyLora} matched), path → layer, in model order;
     * an unmodifiable view. This is the map {@code io.github.lora4j.io.PeftAdapterFiles} saves and loads.
     */
    public Map<String, LoraLinear> loraModules() {
        return Collections.unmodifiableMap(targeted);
    }

    /**
     * The target specification applied: the names passed to {@link #applyLora(LoraConfig, List)}, or a one-element
     * list holding the regex given to {@link #applyLora(LoraConfig, Pattern)}; empty before any apply.
     */
    public List<String> targetModules() {
        return targetRegex != null ? List.of(targetRegex) : List.copyOf(targetModules);
    }

    /** Whether the targets were given as a regular expression (PEFT stores a string then, not a list). */
    public boolean targetIsRegex() {
        return targetRegex != null;
    }

    // ---------------------------------------------------------------- applying adapters

    /**
     * Adds adapter {@value #DEFAULT_ADAPTER} (active) to every module whose path equals one of {@code targetNames}
     * or ends with {@code "." + name}. Each module's {@code A} is drawn from its own seed, derived from
     * {@code config.seed()} and the module path, so equal-shaped modules do not start from identical {@code A}
     * (as PEFT's global random stream gives); {@code B = 0}, so outputs do not change.
     *
     * @throws IllegalArgumentException if nothing matches (the message lists the available modules), a name is
     *                                  blank, or the rank exceeds {@code min(in, out)} of a matched module
     * @throws IllegalStateException    if LoRA was already applied (use {@link #addAdapter} for more adapters)
     */
    public LoraModel applyLora(LoraConfig config, List<String> targetNames) {
        Objects.requireNonNull(config, "config must not be null");
        Objects.requireNonNull(targetNames, "targetNames must not be null");
        for (String t : targetNames) {
            if (t == null || t.isBlank()) {
                throw new IllegalArgumentException("target module names must not be blank, got " + targetNames);
            }
        }
        List<String> names = List.copyOf(targetNames);
        apply(config, path -> matchesName(path, names), "target modules " + names);
        targetModules.addAll(names);
        return this;
    }

    /**
     * Like {@link #applyLora(LoraConfig, List)} for the modules whose whole path matches {@code regex}
     * (PEFT's {@code target_modules} given as a string: {@code re.fullmatch}).
     */
    public LoraModel applyLora(LoraConfig config, Pattern regex) {
        Objects.requireNonNull(config, "config must not be null");
        Objects.requireNonNull(regex, "regex must not be null");
        apply(config, path -> regex.matcher(path).matches(), "target regex '" + regex.pattern() + "'");
        targetRegex = regex.pattern();
        return this;
    }

    /** PEFT's rule for a list of names: equal, or a suffix after a dot. */
    static boolean matchesName(String path, List<String> names) {
        for (String n : names) {
            if (path.equals(n) || path.endsWith("." + n)) {
                return true;
            }
        }
        return false;
    }

    private void apply(LoraConfig config, Predicate<String> matches, String what) {
        if (!targeted.isEmpty()) {
            throw new IllegalStateException("LoRA is already applied to " + targeted.keySet()
                    + "; use addAdapter(name, config) to add another adapter");
        }
        Map<String, LoraLinear> matched = new LinkedHashMap<>();
        for (Map.Entry<String, LoraLinear> e : modules.entrySet()) {
            if (matches.test(e.getKey())) {
                matched.put(e.getKey(), e.getValue());
            }
        }
        if (matched.isEmpty()) {
            throw new IllegalArgumentException(what + " matched no module; available modules: " + modules.keySet());
        }
        addToAll(matched, DEFAULT_ADAPTER, config);
        for (LoraLinear m : matched.values()) {
            m.setActiveAdapter(DEFAULT_ADAPTER);
        }
        targeted.putAll(matched);
    }

    /**
     * Adds adapter {@code name} to every targeted module (not active; see {@link #setActiveAdapter}). All or
     * nothing: the rank is checked against every module first.
     *
     * @throws IllegalStateException    before {@link #applyLora}
     * @throws IllegalArgumentException for a taken or blank name, or a rank above a module's {@code min(in, out)}
     */
    public void addAdapter(String name, LoraConfig config) {
        Objects.requireNonNull(config, "config must not be null");
        requireApplied();
        addToAll(targeted, name, config);
    }

    private static void addToAll(Map<String, LoraLinear> target, String name, LoraConfig config) {
        for (Map.Entry<String, LoraLinear> e : target.entrySet()) {
            LoraLinear m = e.getValue();
            long max = Math.min(m.inFeatures(), m.outFeatures());
            if (config.rank() > max) {
                throw new IllegalArgumentException("rank must be <= min(in, out) = " + max + " for module '"
                        + e.getKey() + "' (" + m.outFeatures() + "×" + m.inFeatures() + "), got " + config.rank());
            }
            if (m.adapterNames().contains(name)) {
                throw new IllegalArgumentException("adapter '" + name + "' already exists on module '" + e.getKey()
                        + "'; known adapters: " + m.adapterNames());
            }
        }
        List<LoraLinear> done = new ArrayList<>();
        try {
            for (Map.Entry<String, LoraLinear> e : target.entrySet()) {
                e.getValue().addAdapter(name, config.toBuilder().seed(moduleSeed(config.seed(), e.getKey())).build());
                done.add(e.getValue());
            }
        } catch (RuntimeException ex) {
            // Checked above, so only a blank or reserved name gets here (on the first module); undo anyway.
            for (LoraLinear m : done) {
                m.deleteAdapter(name);
            }
            throw ex;
        }
    }

    /** A per-module seed: {@code seed} mixed with the path's (JLS-specified, so stable) hash. */
    static long moduleSeed(long seed, String path) {
        long z = seed + 0x9E3779B97F4A7C15L * (path.hashCode() + 1L);
        z = (z ^ (z >>> 30)) * 0xBF58476D1CE4E5B9L;
        z = (z ^ (z >>> 27)) * 0x94D049BB133111EBL;
        return z ^ (z >>> 31);
    }

    /**
     * Makes {@code name} the active adapter of every targeted module. All or nothing: the name is checked on every
     * module and no module may be merged.
     *
     * @throws IllegalArgumentException for a name unknown to some targeted module
     * @throws IllegalStateException    before {@link #applyLora}, or while merged
     */
    public void setActiveAdapter(String name) {
        Objects.requireNonNull(name, "adapter name must not be null");
        requireApplied();
        for (Map.Entry<String, LoraLinear> e : targeted.entrySet()) {
            if (!e.getValue().adapterNames().contains(name)) {
                throw new IllegalArgumentException("unknown adapter '" + name + "' on module '" + e.getKey()
                        + "'; known adapters: " + e.getValue().adapterNames());
            }
            if (e.getValue().isMerged()) {
                throw new IllegalStateException("cannot switch adapters while module '" + e.getKey()
                        + "' is merged; unmerge() first");
            }
        }
        for (LoraLinear m : targeted.values()) {
            m.setActiveAdapter(name);
        }
    }

    /** The active adapter of the targeted modules, or null before {@link #applyLora}. */
    public String activeAdapter() {
        return targeted.isEmpty() ? null : targeted.values().iterator().next().activeAdapter();
    }

    /** Adapter names of the targeted modules (all have the same), in the order they were added. */
    public List<String> adapterNames() {
        return targeted.isEmpty() ? List.of() : targeted.values().iterator().next().adapterNames();
    }

    // ---------------------------------------------------------------- forward and training

    /**
     * The output of module {@code path} for input {@code x} {@code [n, in]} (or {@code [..., in]}): the plain
     * layer for untargeted modules, the LoRA layer with its active adapter for targeted ones. See
     * {@link LoraLinear#forward(INDArray)}.
     */
    public INDArray forward(String path, INDArray x) {
        return module(path).forward(x);
    }

    /**
     * Puts every module into training mode (see {@link LoraLinear#train()}): targeted modules apply dropout and
     * all modules keep what {@link LoraLinear#backward} needs, so a gradient can pass through untargeted modules
     * (as {@code dL/dx = dL/dy · W}, with no gradient for their weights) on its way to the adapters.
     */
    public LoraModel train() {
        modules.values().forEach(LoraLinear::train);
        return this;
    }

    /** Puts every module into evaluation mode. */
    public LoraModel eval() {
        modules.values().forEach(LoraLinear::eval);
        return this;
    }

    /** Clears the adapter gradients of every targeted module. */
    public void zeroGrad() {
        targeted.values().forEach(LoraLinear::zeroGrad);
    }

    // ---------------------------------------------------------------- merge

    /** {@link #merge(MergeMode) Merges} every targeted module the {@link MergeMode#EXACT exact} way. */
    public void merge() {
        merge(MergeMode.EXACT);
    }

    /**
     * Merges the active adapter into {@code W} of every targeted module, in place. All or nothing: if merging
     * module {@code k} fails (e.g. a non-finite result), the modules already merged are unmerged again and the
     * exception is rethrown. With {@link MergeMode#EXACT} that rollback restores their {@code W} bit for bit, so the
     * model is exactly as before; with {@link MergeMode#FAST} it may differ by an ulp in merged elements.
     *
     * @throws IllegalStateException before {@link #applyLora}, if some module is already merged, or as
     *                               {@link LoraLinear#merge(MergeMode)}
     */
    public void merge(MergeMode mode) {
        Objects.requireNonNull(mode, "mode must not be null");
        requireApplied();
        for (Map.Entry<String, LoraLinear> e : targeted.entrySet()) {
            if (e.getValue().isMerged()) {
                throw new IllegalStateException("module '" + e.getKey() + "' is already merged; unmerge() first");
            }
        }
        List<LoraLinear> done = new ArrayList<>();
        for (Map.Entry<String, LoraLinear> e : targeted.entrySet()) {
            try {
                e.getValue().merge(mode);
            } catch (RuntimeException ex) {
                for (int i = done.size() - 1; i >= 0; i--) {
                    done.get(i).unmerge();
                }
                throw new IllegalStateException("merging module '" + e.getKey() + "' failed, " + done.size()
                        + " module(s) already merged were unmerged again: " + ex.getMessage(), ex);
            }
            done.add(e.getValue());
        }
    }

    /**
     * Unmerges every targeted module; after an exact merge each {@code W} is bitwise what it was.
     *
     * @throws IllegalStateException unless every targeted module is merged (nothing is changed then)
     */
    public void unmerge() {
        requireApplied();
        for (Map.Entry<String, LoraLinear> e : targeted.entrySet()) {
            if (!e.getValue().isMerged()) {
                throw new IllegalStateException("module '" + e.getKey() + "' is not merged; nothing to unmerge");
            }
        }
        for (LoraLinear m : targeted.values()) {
            m.unmerge();
        }
    }

    /** Whether the targeted modules are merged (false before {@link #applyLora}). */
    public boolean isMerged() {
        return !targeted.isEmpty() && targeted.values().iterator().next().isMerged();
    }

    /**
     * PEFT's {@code merge_and_unload}, without unloading anything: module path → a new array holding the plain
     * weight, {@code W + s·B·A} of the active adapter for targeted modules and a copy of {@code W} for the others,
     * each in its module's own layout ({@code [out, in]} or {@code [in, out]}). Biases are unchanged by LoRA and
     * are not repeated here ({@code module(path).bias()}). The model is untouched; if it is currently merged, the
     * copies hold the merged weights.
     */
    public Map<String, INDArray> mergeAndUnload() {
        Map<String, INDArray> out = new LinkedHashMap<>();
        for (Map.Entry<String, LoraLinear> e : modules.entrySet()) {
            out.put(e.getKey(), e.getValue().mergedWeight());
        }
        return out;
    }

    // ---------------------------------------------------------------- files

    /**
     * Saves adapter {@code adapterName} of the targeted modules as PEFT files ({@code adapter_model.safetensors},
     * F32, and {@code adapter_config.json}) in {@code dir}, atomically; see
     * {@link PeftAdapterFiles#save(Path, Map, String)}. Tensor keys are
     * {@code base_model.model.<module path>.lora_A.weight} / {@code .lora_B.weight}, as PEFT writes them.
     *
     * @throws IllegalStateException    before {@link #applyLora}
     * @throws IllegalArgumentException as {@link PeftAdapterFiles#save}, e.g. no module has that adapter
     * @throws IOException              if writing fails; existing files are then left as they were
     */
    public void save(Path dir, String adapterName) throws IOException {
        requireApplied();
        PeftAdapterFiles.save(dir, loraModules(), adapterName);
    }

    /**
     * Loads the PEFT adapter in {@code dir} as adapter {@code adapterName}; see
     * {@link PeftAdapterFiles#load(Path, Map, String)}.
     * <ul>
     *   <li>On a model without LoRA, the modules the file names become the targeted modules and
     *       {@code adapterName} their active adapter: a fresh model built from the base weights then computes what
     *       the saved one did.</li>
     *   <li>On a model with LoRA applied, the file must cover exactly the targeted modules; the new adapter is
     *       added beside the others and the active adapter does not change.</li>
     * </ul>
     * All or nothing: on any failure no module is changed.
     *
     * @return the file's configuration
     * @throws IllegalArgumentException if the file names a module the model lacks (or, with LoRA applied, does not
     *                                  cover the targeted modules), a shape or rank does not fit, or the name is taken
     * @throws io.github.lora4j.io.AdapterFormatException for a corrupt or unsupported file
     * @throws IOException              if reading fails
     */
    public PeftAdapterConfig load(Path dir, String adapterName) throws IOException {
        Objects.requireNonNull(adapterName, "adapterName must not be null");
        if (targeted.isEmpty()) {
            PeftAdapterConfig cfg = PeftAdapterFiles.load(dir, Collections.unmodifiableMap(modules), adapterName);
            for (Map.Entry<String, LoraLinear> e : modules.entrySet()) {
                if (e.getValue().adapterNames().contains(adapterName)) {
                    e.getValue().setActiveAdapter(adapterName);
                    targeted.put(e.getKey(), e.getValue());
                }
            }
            if (cfg.targetModulesRegex().isPresent()) {
                targetRegex = cfg.targetModulesRegex().get();
            } else {
                targetModules.addAll(cfg.targetModules());
            }
            return cfg;
        }
        PeftAdapterConfig cfg = PeftAdapterFiles.load(dir, loraModules(), adapterName);
        List<String> missing = new ArrayList<>();
        for (Map.Entry<String, LoraLinear> e : targeted.entrySet()) {
            if (!e.getValue().adapterNames().contains(adapterName)) {
                missing.add(e.getKey());
            }
        }
        if (!missing.isEmpty()) {
            for (LoraLinear m : targeted.values()) {
                if (m.adapterNames().contains(adapterName)) {
                    m.deleteAdapter(adapterName);
                }
            }
            throw new IllegalArgumentException("the adapter file must cover every targeted module; expected "
                    + targeted.keySet() + ", missing " + missing + "; nothing was loaded");
        }
        return cfg;
    }

    // ---------------------------------------------------------------- parameters

    /** Parameters training updates: the active adapter's {@code r·(in + out)} summed over targeted modules. */
    public long trainableParameterCount() {
        return targeted.values().stream().mapToLong(LoraLinear::trainableParameterCount).sum();
    }

    /** All parameters: every module's weight and bias, targeted or not, plus every adapter of every module. */
    public long totalParameterCount() {
        return modules.values().stream().mapToLong(LoraLinear::totalParameterCount).sum();
    }

    /**
     * PEFT's {@code print_trainable_parameters()} line, to the character:
     * {@code "trainable params: 65,536 || all params: 16,842,752 || trainable%: 0.3891"} (thousands separated by
     * commas and the percentage with four decimals, whatever the default locale).
     */
    public String trainableParametersReport() {
        long trainable = trainableParameterCount();
        long all = totalParameterCount();
        return String.format(Locale.ROOT, "trainable params: %,d || all params: %,d || trainable%%: %.4f",
                trainable, all, 100.0 * trainable / all);
    }

    @Override
    public String toString() {
        return "LoraModel{modules=" + modules.size() + ", targeted=" + targeted.keySet() + ", active="
                + activeAdapter() + ", merged=" + isMerged() + "}";
    }

    private void requireApplied() {
        if (targeted.isEmpty()) {
            throw new IllegalStateException("no LoRA applied yet; call applyLora(config, targetModules) first");
        }
    }

    /**
     * Collects named linear modules; {@link #build()} validates each (shape, data type, finite values) as
     * {@link LoraLinear#base} does. Arrays are referenced, not copied.
     */
    public static final class Builder {
        private final Map<String, LoraLinear> modules = new LinkedHashMap<>();

        private Builder() {
        }

        /**
         * Adds a linear module with weight {@code [out, in]} (PyTorch's {@code nn.Linear}) and bias {@code [out]}
         * or null.
         *
         * @throws IllegalArgumentException for a blank or repeated path, or a bad weight or bias
         */
        public Builder linear(String path, INDArray weight, INDArray bias) {
            return add(path, weight, bias, WeightLayout.OUT_IN);
        }

        /**
         * Adds a linear module with weight {@code [in, out]} (DL4J's {@code DenseLayer}, GPT-2's {@code Conv1D},
         * PEFT's {@code fan_in_fan_out}); used through transpose flags, never copied.
         */
        public Builder linearInOut(String path, INDArray weight, INDArray bias) {
            return add(path, weight, bias, WeightLayout.IN_OUT);
        }

        /** Adds a linear module whose weight is stored in {@code layout}. */
        public Builder add(String path, INDArray weight, INDArray bias, WeightLayout layout) {
            Objects.requireNonNull(path, "module path must not be null");
            if (path.isBlank()) {
                throw new IllegalArgumentException("module path must not be blank, got '" + path + "'");
            }
            if (modules.containsKey(path)) {
                throw new IllegalArgumentException("module '" + path + "' was already added");
            }
            try {
                modules.put(path, LoraLinear.base(weight, bias, layout));
            } catch (IllegalArgumentException e) {
                throw new IllegalArgumentException("module '" + path + "': " + e.getMessage(), e);
            }
            return this;
        }

        /**
         * The model.
         *
         * @throws IllegalArgumentException if no module was added
         */
        public LoraModel build() {
            if (modules.isEmpty()) {
                throw new IllegalArgumentException("a model needs at least one module, got none");
            }
            return new LoraModel(new LinkedHashMap<>(modules));
        }
    }
}
