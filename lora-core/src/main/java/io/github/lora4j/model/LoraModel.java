package io.github.lora4j.model;

import io.github.lora4j.LoraConfig;
import io.github.lora4j.LoraConv2d;
import io.github.lora4j.LoraEmbedding;
import io.github.lora4j.LoraLinear;
import io.github.lora4j.MergeMode;
import io.github.lora4j.WeightLayout;
import io.github.lora4j.io.AdapterFormatException;
import io.github.lora4j.io.PeftAdapter;
import io.github.lora4j.io.PeftAdapterConfig;
import io.github.lora4j.io.PeftAdapterFiles;
import java.io.IOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Objects;
import java.util.function.Predicate;
import java.util.regex.Pattern;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * A model as PEFT sees it: an ordered map of named modules (module path such as
 * {@code model.layers.0.self_attn.q_proj}), linear ones (frozen weight, optional bias, {@link WeightLayout}) and
 * embeddings (frozen table {@code [num_embeddings, dim]}) and 2-D convolutions ({@link LoraConv2d}, inference only),
 * to which LoRA adapters are applied by target-module names or a regular expression, all at once.
 *
 * <pre>{@code
 * LoraModel model = LoraModel.builder()
 *         .embedding("model.embed_tokens", table)                   // [num_embeddings, dim]
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
 * available modules, as PEFT raises one. Linear modules get {@link LoraLinear} adapters, embeddings
 * {@link LoraEmbedding} ones (PEFT's embedding init: {@code A = 0}, {@code B ~ N(0, 1)}).
 *
 * <h2>modules_to_save</h2>
 * A module can be replaced by a fully trained copy, as PEFT's {@code modules_to_save} (classifier heads, resized
 * embeddings): {@link #load} does it for the full tensors of a file, {@link #setModuleToSave} by hand. The copy's
 * weight and bias are new arrays; the original module and its arrays are kept untouched and come back with
 * {@link #setModulesToSaveEnabled setModulesToSaveEnabled(false)} or {@link #unloadModulesToSave()}. A module is
 * either LoRA-adapted or saved in full, never both.
 *
 * <h2>Who may change what</h2>
 * Weights and biases are referenced, not copied (the caller's arrays are the model's). Only {@link #merge()} and
 * {@link #unmerge()} write them, in place; {@link #mergeAndUnload()} returns new arrays and changes nothing.
 * Every linear module is a {@link LoraLinear} (untargeted ones without adapters, so they compute the plain layer),
 * and each module's own lock makes its forward safe against concurrent merges of that module. Model-wide changes
 * (apply, add/switch adapter, merge, unmerge, load) are not atomic for readers across modules: a forward on another
 * thread may see module 1 merged and module 2 not yet. Do model-wide changes while no forward runs.
 *
 * <h2>Tied weights</h2>
 * No two modules may share weight memory: {@link Builder#build()} refuses weights (and tables) whose address ranges
 * overlap, such as an {@code lm_head} tied to the input embedding, because merging an adapter into one would change
 * the other, and unmerging both would corrupt the shared array for good. Loose layers ({@link LoraLinear#wrap}) are
 * not checked against each other: never wrap one array in two layers that merge.
 *
 * <h2>Errors</h2>
 * Bad arguments throw {@link IllegalArgumentException}, calls in the wrong state {@link IllegalStateException};
 * each names what was expected and what came, and leaves the model as it was.
 */
public final class LoraModel {

    /** Name of the adapter that {@link #applyLora} adds, as in PEFT. */
    public static final String DEFAULT_ADAPTER = LoraLinear.DEFAULT_ADAPTER;

    private final List<String> order;
    /** Current linear modules: a modules_to_save copy replaces its original here while enabled. */
    private final Map<String, LoraLinear> modules;
    private final Map<String, LoraEmbedding> embeddings;
    private final Map<String, LoraConv2d> convs;
    private final Map<String, LoraLinear> targeted = new LinkedHashMap<>();
    private final Map<String, LoraEmbedding> targetedEmbeddings = new LinkedHashMap<>();
    private final Map<String, LoraConv2d> targetedConvs = new LinkedHashMap<>();
    /** modules_to_save: path to {original, copy}. */
    private final Map<String, LoraLinear[]> savedLinears = new LinkedHashMap<>();
    private final Map<String, LoraEmbedding[]> savedEmbeddings = new LinkedHashMap<>();
    private boolean modulesToSaveEnabled = true;
    private final List<String> targetModules = new ArrayList<>();
    private String targetRegex;
    private LoraConfig appliedConfig;
    private String baseModelNameOrPath;

    private LoraModel(List<String> order, Map<String, LoraLinear> modules, Map<String, LoraEmbedding> embeddings,
                      Map<String, LoraConv2d> convs) {
        this.order = order;
        this.modules = modules;
        this.embeddings = embeddings;
        this.convs = convs;
    }

    /** A builder for the model's modules, in the order they are added. */
    public static Builder builder() {
        return new Builder();
    }

    // ---------------------------------------------------------------- modules

    /** All module paths (linear and embedding), in insertion order. */
    public List<String> modulePaths() {
        return List.copyOf(order);
    }

    /**
     * The linear layer at {@code path} (targeted or not): its weight and bias are the arrays given to the builder,
     * or those of its modules_to_save copy while that is enabled.
     *
     * @throws IllegalArgumentException for an unknown path or an embedding, listing the linear modules
     */
    public LoraLinear module(String path) {
        Objects.requireNonNull(path, "module path must not be null");
        LoraLinear m = modules.get(path);
        if (m == null) {
            throw new IllegalArgumentException("unknown module '" + path + "'"
                    + (embeddings.containsKey(path) ? " among the linear modules (it is an embedding: use embedding(path))"
                    : "")
                    + "; available linear modules: " + modules.keySet());
        }
        return m;
    }

    /**
     * The embedding at {@code path}.
     *
     * @throws IllegalArgumentException for an unknown path or a linear module, listing the embeddings
     */
    public LoraEmbedding embedding(String path) {
        Objects.requireNonNull(path, "module path must not be null");
        LoraEmbedding m = embeddings.get(path);
        if (m == null) {
            throw new IllegalArgumentException("unknown embedding '" + path + "'; available embeddings: "
                    + embeddings.keySet());
        }
        return m;
    }

    /**
     * The Conv2d module at {@code path}.
     *
     * @throws IllegalArgumentException for an unknown path or another kind of module, listing the conv modules
     */
    public LoraConv2d conv2d(String path) {
        Objects.requireNonNull(path, "module path must not be null");
        LoraConv2d m = convs.get(path);
        if (m == null) {
            throw new IllegalArgumentException("unknown conv module '" + path + "'; available conv modules: "
                    + convs.keySet());
        }
        return m;
    }

    /**
     * The linear modules that carry LoRA adapters (those {@link #applyLora} matched), path → layer, in model order;
     * an unmodifiable view. This is the map {@code io.github.lora4j.io.PeftAdapterFiles} saves and loads.
     */
    public Map<String, LoraLinear> loraModules() {
        return Collections.unmodifiableMap(targeted);
    }

    /** The embeddings that carry LoRA adapters, path → layer, in model order; an unmodifiable view. */
    public Map<String, LoraEmbedding> loraEmbeddings() {
        return Collections.unmodifiableMap(targetedEmbeddings);
    }

    /** The Conv2d modules that carry LoRA adapters, path → layer, in model order; an unmodifiable view. */
    public Map<String, LoraConv2d> loraConvs() {
        return Collections.unmodifiableMap(targetedConvs);
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

    /** {@code base_model_name_or_path} that {@link #save} writes (null writes null); {@link #load} sets it from the file. */
    public LoraModel setBaseModelNameOrPath(String nameOrPath) {
        this.baseModelNameOrPath = nameOrPath;
        return this;
    }

    /** The {@code base_model_name_or_path} {@link #save} writes, or null. */
    public String baseModelNameOrPath() {
        return baseModelNameOrPath;
    }

    // ---------------------------------------------------------------- applying adapters

    /**
     * Adds adapter {@value #DEFAULT_ADAPTER} (active) to every module whose path equals one of {@code targetNames}
     * or ends with {@code "." + name}. Each module's {@code A} is drawn from its own seed, derived from
     * {@code config.seed()} and the module path, so equal-shaped modules do not start from identical {@code A}
     * (as PEFT's global random stream gives); {@code B = 0} (embeddings: {@code A = 0}), so outputs do not change.
     *
     * @throws IllegalArgumentException if nothing matches (the message lists the available modules), a name is
     *                                  blank, the rank exceeds {@code min(in, out)} of a matched module, or a
     *                                  matched module is a modules_to_save copy
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
        if (!noTargets()) {
            throw new IllegalStateException("LoRA is already applied to " + targetPaths()
                    + "; use addAdapter(name, config) to add another adapter");
        }
        Map<String, LoraLinear> matched = new LinkedHashMap<>();
        Map<String, LoraEmbedding> matchedEmb = new LinkedHashMap<>();
        Map<String, LoraConv2d> matchedConv = new LinkedHashMap<>();
        for (String path : order) {
            if (matches.test(path)) {
                if (savedLinears.containsKey(path) || savedEmbeddings.containsKey(path)) {
                    throw new IllegalArgumentException(what + " matched module '" + path + "', which is a "
                            + "modules_to_save copy; a module is either LoRA-adapted or saved in full");
                }
                if (modules.containsKey(path)) {
                    matched.put(path, modules.get(path));
                } else if (embeddings.containsKey(path)) {
                    matchedEmb.put(path, embeddings.get(path));
                } else {
                    matchedConv.put(path, convs.get(path));
                }
            }
        }
        if (matched.isEmpty() && matchedEmb.isEmpty() && matchedConv.isEmpty()) {
            throw new IllegalArgumentException(what + " matched no module; available modules: " + order);
        }
        addToAll(matched, matchedEmb, matchedConv, DEFAULT_ADAPTER, config);
        for (LoraLinear m : matched.values()) {
            m.setActiveAdapter(DEFAULT_ADAPTER);
        }
        for (LoraEmbedding m : matchedEmb.values()) {
            m.setActiveAdapter(DEFAULT_ADAPTER);
        }
        for (LoraConv2d m : matchedConv.values()) {
            m.setActiveAdapter(DEFAULT_ADAPTER);
        }
        targeted.putAll(matched);
        targetedEmbeddings.putAll(matchedEmb);
        targetedConvs.putAll(matchedConv);
        appliedConfig = config;
    }

    private List<String> targetPaths() {
        List<String> out = new ArrayList<>();
        for (String p : order) {
            if (targeted.containsKey(p) || targetedEmbeddings.containsKey(p) || targetedConvs.containsKey(p)) {
                out.add(p);
            }
        }
        return out;
    }

    private boolean noTargets() {
        return targeted.isEmpty() && targetedEmbeddings.isEmpty() && targetedConvs.isEmpty();
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
        addToAll(targeted, targetedEmbeddings, targetedConvs, name, config);
    }

    private static void addToAll(Map<String, LoraLinear> target, Map<String, LoraEmbedding> targetEmb,
                                 Map<String, LoraConv2d> targetConv, String name, LoraConfig config) {
        for (Map.Entry<String, LoraLinear> e : target.entrySet()) {
            checkAddable(e.getKey(), e.getValue().inFeatures(), e.getValue().outFeatures(), e.getValue().adapterNames(),
                    name, config);
        }
        for (Map.Entry<String, LoraEmbedding> e : targetEmb.entrySet()) {
            checkAddable(e.getKey(), e.getValue().numEmbeddings(), e.getValue().embeddingDim(),
                    e.getValue().adapterNames(), name, config);
        }
        for (Map.Entry<String, LoraConv2d> e : targetConv.entrySet()) {
            int[] k = e.getValue().kernelSize();
            checkAddable(e.getKey(), e.getValue().inChannels() * k[0] * k[1], e.getValue().outChannels(),
                    e.getValue().adapterNames(), name, config);
        }
        List<Runnable> undo = new ArrayList<>();
        try {
            for (Map.Entry<String, LoraLinear> e : target.entrySet()) {
                e.getValue().addAdapter(name, config.toBuilder().seed(moduleSeed(config.seed(), e.getKey())).build());
                undo.add(() -> e.getValue().deleteAdapter(name));
            }
            for (Map.Entry<String, LoraEmbedding> e : targetEmb.entrySet()) {
                e.getValue().addAdapter(name, config.toBuilder().seed(moduleSeed(config.seed(), e.getKey())).build());
                undo.add(() -> e.getValue().deleteAdapter(name));
            }
            for (Map.Entry<String, LoraConv2d> e : targetConv.entrySet()) {
                e.getValue().addAdapter(name, config.toBuilder().seed(moduleSeed(config.seed(), e.getKey())).build());
                undo.add(() -> e.getValue().deleteAdapter(name));
            }
        } catch (RuntimeException ex) {
            // Checked above, so only a blank or reserved name gets here (on the first module); undo anyway.
            undo.forEach(Runnable::run);
            throw ex;
        }
    }

    private static void checkAddable(String path, long in, long out, List<String> names, String name,
                                     LoraConfig config) {
        long max = Math.min(in, out);
        if (config.rank() > max) {
            throw new IllegalArgumentException("rank must be <= min(in, out) = " + max + " for module '" + path + "' ("
                    + out + "×" + in + "), got " + config.rank());
        }
        if (names.contains(name)) {
            throw new IllegalArgumentException("adapter '" + name + "' already exists on module '" + path
                    + "'; known adapters: " + names);
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
            checkSwitchable(e.getKey(), e.getValue().adapterNames(), e.getValue().isMerged(), name);
        }
        for (Map.Entry<String, LoraEmbedding> e : targetedEmbeddings.entrySet()) {
            checkSwitchable(e.getKey(), e.getValue().adapterNames(), e.getValue().isMerged(), name);
        }
        for (Map.Entry<String, LoraConv2d> e : targetedConvs.entrySet()) {
            checkSwitchable(e.getKey(), e.getValue().adapterNames(), e.getValue().isMerged(), name);
        }
        targeted.values().forEach(m -> m.setActiveAdapter(name));
        targetedEmbeddings.values().forEach(m -> m.setActiveAdapter(name));
        targetedConvs.values().forEach(m -> m.setActiveAdapter(name));
    }

    private static void checkSwitchable(String path, List<String> names, boolean merged, String name) {
        if (!names.contains(name)) {
            throw new IllegalArgumentException("unknown adapter '" + name + "' on module '" + path
                    + "'; known adapters: " + names);
        }
        if (merged) {
            throw new IllegalStateException("cannot switch adapters while module '" + path + "' is merged; unmerge() first");
        }
    }

    /** The active adapter of the targeted modules, or null before {@link #applyLora}. */
    public String activeAdapter() {
        if (!targeted.isEmpty()) {
            return targeted.values().iterator().next().activeAdapter();
        }
        if (!targetedEmbeddings.isEmpty()) {
            return targetedEmbeddings.values().iterator().next().activeAdapter();
        }
        return targetedConvs.isEmpty() ? null : targetedConvs.values().iterator().next().activeAdapter();
    }

    /** Adapter names of the targeted modules (all have the same), in the order they were added. */
    public List<String> adapterNames() {
        if (!targeted.isEmpty()) {
            return targeted.values().iterator().next().adapterNames();
        }
        if (!targetedEmbeddings.isEmpty()) {
            return targetedEmbeddings.values().iterator().next().adapterNames();
        }
        return targetedConvs.isEmpty() ? List.of() : targetedConvs.values().iterator().next().adapterNames();
    }

    // ---------------------------------------------------------------- forward and training

    /**
     * The output of module {@code path} for input {@code x}: for a linear module {@code x [n, in]} (or
     * {@code [..., in]}) gives {@code [n, out]} (see {@link LoraLinear#forward(INDArray)}); for an embedding
     * {@code x} holds token ids of any shape {@code [...]} and gives {@code [..., dim]} (see
     * {@link LoraEmbedding#forward(INDArray)}).
     */
    public INDArray forward(String path, INDArray x) {
        Objects.requireNonNull(path, "module path must not be null");
        LoraEmbedding e = embeddings.get(path);
        if (e != null) {
            return e.forward(x);
        }
        LoraConv2d c = convs.get(path);
        return c != null ? c.forward(x) : module(path).forward(x);
    }

    /**
     * Puts every module into training mode (see {@link LoraLinear#train()}): targeted modules apply dropout and
     * all modules keep what {@link LoraLinear#backward} needs, so a gradient can pass through untargeted modules
     * (as {@code dL/dx = dL/dy · W}, with no gradient for their weights) on its way to the adapters.
     */
    public LoraModel train() {
        modules.values().forEach(LoraLinear::train);
        embeddings.values().forEach(LoraEmbedding::train);
        // Modules swapped out (originals or modules_to_save copies) follow, so a swap keeps the mode.
        savedLinears.values().forEach(m -> {
            m[0].train();
            m[1].train();
        });
        savedEmbeddings.values().forEach(m -> {
            m[0].train();
            m[1].train();
        });
        return this;
    }

    /** Puts every module into evaluation mode. */
    public LoraModel eval() {
        modules.values().forEach(LoraLinear::eval);
        embeddings.values().forEach(LoraEmbedding::eval);
        savedLinears.values().forEach(m -> {
            m[0].eval();
            m[1].eval();
        });
        savedEmbeddings.values().forEach(m -> {
            m[0].eval();
            m[1].eval();
        });
        return this;
    }

    /** Clears the adapter gradients of every targeted module. */
    public void zeroGrad() {
        targeted.values().forEach(LoraLinear::zeroGrad);
        targetedEmbeddings.values().forEach(LoraEmbedding::zeroGrad);
    }

    // ---------------------------------------------------------------- merge

    /** {@link #merge(MergeMode) Merges} every targeted module the {@link MergeMode#EXACT exact} way. */
    public void merge() {
        merge(MergeMode.EXACT);
    }

    /** One targeted module, either kind, as merge and unmerge see it. */
    private record Mergeable(String path, Runnable merge, Runnable unmerge, boolean merged) {
    }

    private List<Mergeable> mergeables(MergeMode mode) {
        List<Mergeable> out = new ArrayList<>();
        targeted.forEach((p, m) -> out.add(new Mergeable(p, () -> m.merge(mode), m::unmerge, m.isMerged())));
        targetedEmbeddings.forEach((p, m) -> out.add(new Mergeable(p, () -> m.merge(mode), m::unmerge, m.isMerged())));
        targetedConvs.forEach((p, m) -> out.add(new Mergeable(p, () -> m.merge(mode), m::unmerge, m.isMerged())));
        return out;
    }

    /**
     * Merges the active adapter into {@code W} of every targeted module (embedding tables too), in place. All or
     * nothing: if merging module {@code k} fails (e.g. a non-finite result), the modules already merged are unmerged
     * again and the exception is rethrown. With {@link MergeMode#EXACT} that rollback restores their {@code W} bit
     * for bit, so the model is exactly as before; with {@link MergeMode#FAST} it may differ by an ulp in merged
     * elements.
     *
     * @throws IllegalStateException before {@link #applyLora}, if some module is already merged, or as
     *                               {@link LoraLinear#merge(MergeMode)}
     */
    public void merge(MergeMode mode) {
        Objects.requireNonNull(mode, "mode must not be null");
        requireApplied();
        List<Mergeable> all = mergeables(mode);
        for (Mergeable m : all) {
            if (m.merged()) {
                throw new IllegalStateException("module '" + m.path() + "' is already merged; unmerge() first");
            }
        }
        List<Mergeable> done = new ArrayList<>();
        for (Mergeable m : all) {
            try {
                m.merge().run();
            } catch (RuntimeException ex) {
                for (int i = done.size() - 1; i >= 0; i--) {
                    done.get(i).unmerge().run();
                }
                throw new IllegalStateException("merging module '" + m.path() + "' failed, " + done.size()
                        + " module(s) already merged were unmerged again: " + ex.getMessage(), ex);
            }
            done.add(m);
        }
    }

    /**
     * Unmerges every targeted module; after an exact merge each {@code W} is bitwise what it was.
     *
     * @throws IllegalStateException unless every targeted module is merged (nothing is changed then)
     */
    public void unmerge() {
        requireApplied();
        List<Mergeable> all = mergeables(MergeMode.EXACT);
        for (Mergeable m : all) {
            if (!m.merged()) {
                throw new IllegalStateException("module '" + m.path() + "' is not merged; nothing to unmerge");
            }
        }
        all.forEach(m -> m.unmerge().run());
    }

    /** Whether the targeted modules are merged (false before {@link #applyLora}). */
    public boolean isMerged() {
        return mergeables(MergeMode.EXACT).stream().findFirst().map(Mergeable::merged).orElse(false);
    }

    /**
     * PEFT's {@code merge_and_unload}, without unloading anything: module path → a new array holding the plain
     * weight, {@code W + s·B·A} of the active adapter for targeted modules (an embedding's table
     * {@code T + s·(B A)^T}), the modules_to_save copy's weight where one is enabled, and a copy of {@code W} for the
     * others, each in its module's own layout ({@code [out, in]} or {@code [in, out]}). Biases are unchanged by LoRA
     * and are not repeated here ({@code module(path).bias()}). The model is untouched; if it is currently merged,
     * the copies hold the merged weights.
     */
    public Map<String, INDArray> mergeAndUnload() {
        Map<String, INDArray> out = new LinkedHashMap<>();
        for (String p : order) {
            out.put(p, modules.containsKey(p) ? modules.get(p).mergedWeight() : embeddings.containsKey(p)
                    ? embeddings.get(p).mergedTable() : convs.get(p).mergedWeight());
        }
        return out;
    }

    // ---------------------------------------------------------------- modules_to_save

    /**
     * Replaces module {@code path} by a fully trained copy, as PEFT's {@code modules_to_save}: a linear module gets
     * {@code weight} (in the module's layout) and {@code bias} (null keeps a copy of the original bias), an embedding
     * {@code weight} {@code [num_embeddings, dim]} (bias must be null). The arrays are referenced, not copied; the
     * original module is kept and comes back with {@link #unloadModulesToSave()}. The copy is active at once when
     * modules_to_save are enabled.
     *
     * @throws IllegalArgumentException for an unknown or LoRA-adapted module, a module that already has a copy, a
     *                                  shape or type unlike the original's, a non-finite value, or a weight sharing
     *                                  memory with another module's
     */
    public void setModuleToSave(String path, INDArray weight, INDArray bias) {
        Objects.requireNonNull(path, "module path must not be null");
        Objects.requireNonNull(weight, "weight must not be null");
        Map<String, Map<String, long[]>> shapes = new LinkedHashMap<>();
        Map<String, long[]> p = new LinkedHashMap<>();
        p.put("weight", weight.shape());
        if (bias != null) {
            p.put("bias", bias.shape());
        }
        shapes.put(path, p);
        checkFullTensors(shapes);
        for (String q : order) {
            if (Overlap.overlaps(weight, baseArray(q))) {
                throw new IllegalArgumentException("the modules_to_save weight of '" + path + "' shares memory with "
                        + "the weight of module '" + q + "'; expected a new array");
            }
        }
        putSaved(path, weight, bias);
    }

    private INDArray baseArray(String path) {
        return modules.containsKey(path) ? modules.get(path).weight() : embeddings.containsKey(path)
                ? embeddings.get(path).table() : convs.get(path).weight();
    }

    private void putSaved(String path, INDArray weight, INDArray bias) {
        if (modules.containsKey(path)) {
            LoraLinear original = modules.get(path);
            INDArray b = bias != null ? bias : original.bias() == null ? null : original.bias().dup('c');
            LoraLinear copy;
            try {
                copy = LoraLinear.base(weight, b, original.layout());
            } catch (IllegalArgumentException e) {
                throw new IllegalArgumentException("modules_to_save module '" + path + "': " + e.getMessage(), e);
            }
            if (original.isTraining()) {
                copy.train();
            }
            savedLinears.put(path, new LoraLinear[] {original, copy});
            if (modulesToSaveEnabled) {
                modules.put(path, copy);
            }
        } else {
            LoraEmbedding original = embeddings.get(path);
            LoraEmbedding copy;
            try {
                copy = LoraEmbedding.base(weight);
            } catch (IllegalArgumentException e) {
                throw new IllegalArgumentException("modules_to_save module '" + path + "': " + e.getMessage(), e);
            }
            if (original.isTraining()) {
                copy.train();
            }
            savedEmbeddings.put(path, new LoraEmbedding[] {original, copy});
            if (modulesToSaveEnabled) {
                embeddings.put(path, copy);
            }
        }
    }

    /** Paths of the modules replaced by modules_to_save copies, in model order. */
    public List<String> modulesToSave() {
        List<String> out = new ArrayList<>();
        for (String p : order) {
            if (savedLinears.containsKey(p) || savedEmbeddings.containsKey(p)) {
                out.add(p);
            }
        }
        return out;
    }

    /**
     * Switches between the modules_to_save copies ({@code true}, the default) and the original modules
     * ({@code false}), as PEFT's disabled adapter context does; nothing is deleted.
     */
    public void setModulesToSaveEnabled(boolean enabled) {
        modulesToSaveEnabled = enabled;
        savedLinears.forEach((p, m) -> modules.put(p, m[enabled ? 1 : 0]));
        savedEmbeddings.forEach((p, m) -> embeddings.put(p, m[enabled ? 1 : 0]));
    }

    /** Whether the modules_to_save copies are the modules in use. */
    public boolean modulesToSaveEnabled() {
        return modulesToSaveEnabled;
    }

    /** Drops every modules_to_save copy: the original modules, with their untouched arrays, are the model's again. */
    public void unloadModulesToSave() {
        setModulesToSaveEnabled(false);
        savedLinears.clear();
        savedEmbeddings.clear();
        modulesToSaveEnabled = true;
    }

    /** Checks full tensors (module → parameter → shape) against the original modules; nothing is changed. */
    private void checkFullTensors(Map<String, Map<String, long[]>> full) {
        for (Map.Entry<String, Map<String, long[]>> e : full.entrySet()) {
            String path = e.getKey();
            if (!savedLinears.isEmpty() || !savedEmbeddings.isEmpty()) {
                throw new IllegalArgumentException("modules_to_save module '" + path + "': the model already has "
                        + "modules_to_save copies of " + modulesToSave() + "; unloadModulesToSave() first");
            }
            if (targeted.containsKey(path) || targetedEmbeddings.containsKey(path)) {
                throw new IllegalArgumentException("modules_to_save module '" + path + "' carries LoRA adapters; "
                        + "a module is either LoRA-adapted or saved in full");
            }
            Map<String, long[]> params = e.getValue();
            if (modules.containsKey(path)) {
                LoraLinear m = modules.get(path);
                for (Map.Entry<String, long[]> p : params.entrySet()) {
                    long[] expected = p.getKey().equals("weight") ? m.weight().shape()
                            : m.bias() == null ? null : new long[] {m.outFeatures()};
                    boolean ok = expected != null && (Arrays.equals(expected, p.getValue())
                            || p.getKey().equals("bias") && Arrays.equals(new long[] {1, m.outFeatures()}, p.getValue()));
                    if (!ok) {
                        throw new IllegalArgumentException("modules_to_save module '" + path + "' " + p.getKey()
                                + ": expected shape " + (expected == null ? "none (the module has no bias)"
                                : Arrays.toString(expected)) + ", got " + Arrays.toString(p.getValue()));
                    }
                }
            } else if (embeddings.containsKey(path)) {
                LoraEmbedding m = embeddings.get(path);
                long[] expected = {m.numEmbeddings(), m.embeddingDim()};
                for (Map.Entry<String, long[]> p : params.entrySet()) {
                    if (!p.getKey().equals("weight") || !Arrays.equals(expected, p.getValue())) {
                        throw new IllegalArgumentException("modules_to_save module '" + path + "' (an embedding) "
                                + p.getKey() + ": expected only weight " + Arrays.toString(expected) + ", got "
                                + p.getKey() + " " + Arrays.toString(p.getValue()));
                    }
                }
            } else {
                throw new IllegalArgumentException("modules_to_save module '" + path + "' is not a linear module or an "
                        + "embedding of the model; available modules: " + order);
            }
        }
    }

    // ---------------------------------------------------------------- files

    /**
     * Saves adapter {@code adapterName} of the targeted modules as PEFT files ({@code adapter_model.safetensors},
     * F32, and {@code adapter_config.json}) in {@code dir}, atomically; see {@link PeftAdapterFiles.Saver#save}.
     * Tensor keys are {@code base_model.model.<module path>.lora_A.weight} / {@code .lora_B.weight} (embeddings
     * {@code .lora_embedding_A} / {@code .lora_embedding_B}), as PEFT writes them; modules_to_save copies go in as
     * {@code base_model.model.<module path>.weight} / {@code .bias} and are listed in {@code modules_to_save}.
     * {@code target_modules} is what {@link #applyLora} was given (a list or a regex string),
     * {@code base_model_name_or_path} is {@link #baseModelNameOrPath()}, and modules of other ranks or alphas go to
     * {@code rank_pattern} / {@code alpha_pattern}.
     *
     * @throws IllegalStateException    before {@link #applyLora}
     * @throws IllegalArgumentException as {@link PeftAdapterFiles.Saver#save}, e.g. no module has that adapter or a
     *                                  tensor holds NaN
     * @throws IOException              if writing fails; existing files are then left as they were
     */
    public void save(Path dir, String adapterName) throws IOException {
        requireApplied();
        Map<String, Map<String, INDArray>> full = new LinkedHashMap<>();
        savedLinears.forEach((p, m) -> {
            Map<String, INDArray> t = new LinkedHashMap<>();
            t.put("weight", m[1].weight());
            if (m[1].bias() != null) {
                t.put("bias", m[1].bias().reshape(m[1].outFeatures()));
            }
            full.put(p, t);
        });
        savedEmbeddings.forEach((p, m) -> full.put(p, Map.of("weight", m[1].table())));
        PeftAdapterFiles.Saver saver = PeftAdapterFiles.saver().linears(loraModules()).embeddings(loraEmbeddings())
                .convs(loraConvs())
                .modulesToSave(full).baseModelNameOrPath(baseModelNameOrPath);
        if (targetRegex != null) {
            saver.targetModulesRegex(targetRegex);
        } else if (!targetModules.isEmpty()) {
            saver.targetModules(targetModules);
        }
        if (appliedConfig != null) {
            saver.provenance(appliedConfig);
        }
        saver.save(dir, adapterName);
    }

    /**
     * Loads the PEFT adapter in {@code dir} as adapter {@code adapterName}; see
     * {@link PeftAdapterFiles#load(Path, Map, Map, String)}. Linear LoRA goes to linear modules and embedding LoRA
     * to embeddings, each with its own rank and alpha ({@code rank_pattern} / {@code alpha_pattern}); Conv2d LoRA
     * goes to {@link LoraConv2d} modules ({@link Builder#conv2d}; Conv1d/Conv3d LoRA is refused); the file's full
     * tensors (modules_to_save, trained biases) replace their modules by copies (see {@link #setModuleToSave}); {@code base_model_name_or_path} is taken over.
     * <ul>
     *   <li>On a model without LoRA, the modules the file names become the targeted modules and
     *       {@code adapterName} their active adapter: a fresh model built from the base weights then computes what
     *       the saved one did.</li>
     *   <li>On a model with LoRA applied, the file must cover exactly the targeted modules; the new adapter is
     *       added beside the others and the active adapter does not change.</li>
     * </ul>
     * All or nothing: the header is checked against the model before any tensor is read; on any failure no module
     * is changed.
     *
     * @return the file's configuration
     * @throws IllegalArgumentException if the file names a module the model lacks (or, with LoRA applied, does not
     *                                  cover the targeted modules), a shape, rank or scaling does not fit, or the
     *                                  name is taken
     * @throws AdapterFormatException   for a corrupt or unsupported file
     * @throws IOException              if reading fails
     */
    public PeftAdapterConfig load(Path dir, String adapterName) throws IOException {
        Objects.requireNonNull(adapterName, "adapterName must not be null");
        boolean fresh = noTargets();
        Map<String, LoraLinear> linearTargets = fresh ? withoutSaved(modules, savedLinears) : loraModules();
        Map<String, LoraEmbedding> embTargets = fresh ? withoutSaved(embeddings, savedEmbeddings) : loraEmbeddings();
        Map<String, LoraConv2d> convTargets = fresh ? Collections.unmodifiableMap(convs) : loraConvs();
        PeftAdapter adapter = PeftAdapterFiles.load(dir, linearTargets, embTargets, convTargets, adapterName,
                layout -> checkFullTensors(layout.fullTensors()));
        List<String> added = new ArrayList<>();
        for (String module : adapter.modules()) {
            added.add(module);
        }
        Runnable undo = () -> {
            for (String m : added) {
                if (modules.containsKey(m)) {
                    modules.get(m).deleteAdapter(adapterName);
                } else if (embeddings.containsKey(m)) {
                    embeddings.get(m).deleteAdapter(adapterName);
                } else {
                    convs.get(m).deleteAdapter(adapterName);
                }
            }
        };
        if (!fresh) {
            List<String> missing = new ArrayList<>();
            for (String p : targetPaths()) {
                if (!added.contains(p)) {
                    missing.add(p);
                }
            }
            if (!missing.isEmpty()) {
                undo.run();
                throw new IllegalArgumentException("the adapter file must cover every targeted module; expected "
                        + targetPaths() + ", missing " + missing + "; nothing was loaded");
            }
        }
        Map<String, INDArray[]> copies = new LinkedHashMap<>();
        try {
            for (String path : adapter.fullModules()) {
                Map<String, INDArray> t = adapter.full(path);
                DataType type = modules.containsKey(path) ? modules.get(path).dataType() : embeddings.get(path).dataType();
                INDArray w = t.containsKey("weight") ? adapter.full(path, "weight", type) : baseArray(path).dup('c');
                INDArray b = t.containsKey("bias") ? adapter.full(path, "bias", type) : null;
                copies.put(path, new INDArray[] {w, b});
            }
        } catch (IOException | RuntimeException e) {
            undo.run();
            throw e;
        }
        copies.forEach((path, wb) -> putSaved(path, wb[0], wb[1]));
        PeftAdapterConfig cfg = adapter.config();
        if (fresh) {
            for (String m : added) {
                if (modules.containsKey(m)) {
                    modules.get(m).setActiveAdapter(adapterName);
                    targeted.put(m, modules.get(m));
                } else if (embeddings.containsKey(m)) {
                    embeddings.get(m).setActiveAdapter(adapterName);
                    targetedEmbeddings.put(m, embeddings.get(m));
                } else {
                    convs.get(m).setActiveAdapter(adapterName);
                    targetedConvs.put(m, convs.get(m));
                }
            }
            reorderTargets();
            if (cfg.targetModulesRegex().isPresent()) {
                targetRegex = cfg.targetModulesRegex().get();
            } else {
                targetModules.addAll(cfg.targetModules());
            }
            baseModelNameOrPath = cfg.baseModelNameOrPath().orElse(baseModelNameOrPath);
        }
        return cfg;
    }

    private static <T> Map<String, T> withoutSaved(Map<String, T> all, Map<String, ?> saved) {
        Map<String, T> out = new LinkedHashMap<>(all);
        out.keySet().removeAll(saved.keySet());
        return Collections.unmodifiableMap(out);
    }

    /** Keeps the targeted maps in model order whatever order the file listed the modules in. */
    private void reorderTargets() {
        Map<String, LoraLinear> t = new LinkedHashMap<>();
        Map<String, LoraEmbedding> te = new LinkedHashMap<>();
        Map<String, LoraConv2d> tc = new LinkedHashMap<>();
        for (String p : order) {
            if (targetedConvs.containsKey(p)) {
                tc.put(p, targetedConvs.get(p));
            }
            if (targeted.containsKey(p)) {
                t.put(p, targeted.get(p));
            }
            if (targetedEmbeddings.containsKey(p)) {
                te.put(p, targetedEmbeddings.get(p));
            }
        }
        targeted.clear();
        targeted.putAll(t);
        targetedEmbeddings.clear();
        targetedEmbeddings.putAll(te);
        targetedConvs.clear();
        targetedConvs.putAll(tc);
    }

    // ---------------------------------------------------------------- parameters

    /**
     * Parameters training updates, as PEFT counts them: the active adapter's {@code r·(in + out)} summed over
     * targeted modules, plus the weights and biases of the enabled modules_to_save copies.
     */
    public long trainableParameterCount() {
        long n = targeted.values().stream().mapToLong(LoraLinear::trainableParameterCount).sum()
                + targetedEmbeddings.values().stream().mapToLong(LoraEmbedding::trainableParameterCount).sum()
                + targetedConvs.values().stream().mapToLong(LoraConv2d::trainableParameterCount).sum();
        if (modulesToSaveEnabled) {
            n += savedLinears.values().stream().mapToLong(m -> m[1].totalParameterCount()).sum()
                    + savedEmbeddings.values().stream().mapToLong(m -> m[1].totalParameterCount()).sum();
        }
        return n;
    }

    /**
     * All parameters: every module's weight and bias, targeted or not, plus every adapter of every module, plus the
     * modules_to_save copies (PEFT keeps both the original and the copy).
     */
    public long totalParameterCount() {
        long n = 0;
        for (String p : order) {
            if (savedLinears.containsKey(p)) {
                n += savedLinears.get(p)[0].totalParameterCount() + savedLinears.get(p)[1].totalParameterCount();
            } else if (savedEmbeddings.containsKey(p)) {
                n += savedEmbeddings.get(p)[0].totalParameterCount() + savedEmbeddings.get(p)[1].totalParameterCount();
            } else if (modules.containsKey(p)) {
                n += modules.get(p).totalParameterCount();
            } else {
                n += embeddings.containsKey(p) ? embeddings.get(p).totalParameterCount()
                        : convs.get(p).totalParameterCount();
            }
        }
        return n;
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
        return "LoraModel{modules=" + order.size() + ", targeted=" + targetPaths() + ", active=" + activeAdapter()
                + ", merged=" + isMerged() + (modulesToSave().isEmpty() ? "" : ", modulesToSave=" + modulesToSave())
                + "}";
    }

    private void requireApplied() {
        if (noTargets()) {
            throw new IllegalStateException("no LoRA applied yet; call applyLora(config, targetModules) first");
        }
    }

    /**
     * Collects named modules; {@link #build()} validates each (shape, data type, finite values) as
     * {@link LoraLinear#base} does, and refuses weights that share memory. Arrays are referenced, not copied.
     */
    public static final class Builder {
        private final List<String> order = new ArrayList<>();
        private final Map<String, LoraLinear> modules = new LinkedHashMap<>();
        private final Map<String, LoraEmbedding> embeddings = new LinkedHashMap<>();
        private final Map<String, LoraConv2d> convs = new LinkedHashMap<>();

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
            checkPath(path);
            try {
                modules.put(path, LoraLinear.base(weight, bias, layout));
            } catch (IllegalArgumentException e) {
                throw new IllegalArgumentException("module '" + path + "': " + e.getMessage(), e);
            }
            order.add(path);
            return this;
        }

        /**
         * Adds an embedding with table {@code [num_embeddings, dim]} (PyTorch's {@code nn.Embedding} weight).
         *
         * @throws IllegalArgumentException for a blank or repeated path, or a bad table
         */
        public Builder embedding(String path, INDArray table) {
            checkPath(path);
            try {
                embeddings.put(path, LoraEmbedding.base(table));
            } catch (IllegalArgumentException e) {
                throw new IllegalArgumentException("module '" + path + "': " + e.getMessage(), e);
            }
            order.add(path);
            return this;
        }

        /**
         * Adds a 2-D convolution with kernel {@code [out, in, kh, kw]} (c-order, contiguous), bias {@code [out]} or
         * null, {@code stride {sy, sx}} and zero {@code padding {ph, pw}}: PEFT's Conv2d LoRA loads into it (see
         * {@link LoraConv2d}: inference and merging, no training).
         *
         * @throws IllegalArgumentException for a blank or repeated path, or a bad kernel, bias, stride or padding
         */
        public Builder conv2d(String path, INDArray weight, INDArray bias, int[] stride, int[] padding) {
            checkPath(path);
            try {
                convs.put(path, LoraConv2d.base(weight, bias, stride, padding));
            } catch (IllegalArgumentException e) {
                throw new IllegalArgumentException("module '" + path + "': " + e.getMessage(), e);
            }
            order.add(path);
            return this;
        }

        private void checkPath(String path) {
            Objects.requireNonNull(path, "module path must not be null");
            if (path.isBlank()) {
                throw new IllegalArgumentException("module path must not be blank, got '" + path + "'");
            }
            if (modules.containsKey(path) || embeddings.containsKey(path) || convs.containsKey(path)) {
                throw new IllegalArgumentException("module '" + path + "' was already added");
            }
        }

        /**
         * The model.
         *
         * @throws IllegalArgumentException if no module was added, or two modules' weights share memory (tied
         *                                  weights), naming both
         */
        public LoraModel build() {
            if (order.isEmpty()) {
                throw new IllegalArgumentException("a model needs at least one module, got none");
            }
            Map<String, INDArray> weights = new LinkedHashMap<>();
            for (String p : order) {
                weights.put(p, modules.containsKey(p) ? modules.get(p).weight() : embeddings.containsKey(p)
                        ? embeddings.get(p).table() : convs.get(p).weight());
            }
            Overlap.refuseShared(weights);
            return new LoraModel(new ArrayList<>(order), new LinkedHashMap<>(modules), new LinkedHashMap<>(embeddings),
                    new LinkedHashMap<>(convs));
        }
    }
}
