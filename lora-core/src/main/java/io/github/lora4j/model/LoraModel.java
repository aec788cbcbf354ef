package io.github.lora4j.model;

import io.github.lora4j.LoraConfig;
import io.github.lora4j.LoraConv2d;
import io.github.lora4j.LoraEmbedding;
import io.github.lora4j.LoraLinear;
import io.github.lora4j.MergeMode;
import io.github.lora4j.WeightLayout;
import io.github.lora4j.io.AdapterFormatException;
import io.github.lora4j.io.PeftAdapterConfig;
import io.github.lora4j.io.PeftAdapterFiles;
import java.io.IOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.function.Supplier;
import java.util.regex.Pattern;
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

    // Package-private: the parts of this class (ModelAdapters, ModelFiles, ModulesToSave, ParameterReport) work on it.
    final List<String> order;
    /** Current linear modules: a modules_to_save copy replaces its original here while enabled. */
    final Map<String, LoraLinear> modules;
    final Map<String, LoraEmbedding> embeddings;
    final Map<String, LoraConv2d> convs;
    /** Modules counted for the report only (norms and other layers lora4j does not compute): path → parameters. */
    final Map<String, Long> parametersOnly;
    final Map<String, LoraLinear> targeted = new LinkedHashMap<>();
    final Map<String, LoraEmbedding> targetedEmbeddings = new LinkedHashMap<>();
    final Map<String, LoraConv2d> targetedConvs = new LinkedHashMap<>();
    /** modules_to_save: path to {original, copy}. */
    final Map<String, LoraLinear[]> savedLinears = new LinkedHashMap<>();
    final Map<String, LoraEmbedding[]> savedEmbeddings = new LinkedHashMap<>();
    boolean modulesToSaveEnabled = true;
    final List<String> targetModules = new ArrayList<>();
    String targetRegex;
    LoraConfig appliedConfig;
    String baseModelNameOrPath;

    private LoraModel(List<String> order, Map<String, LoraLinear> modules, Map<String, LoraEmbedding> embeddings,
                      Map<String, LoraConv2d> convs, Map<String, Long> parametersOnly) {
        this.order = order;
        this.modules = modules;
        this.embeddings = embeddings;
        this.convs = convs;
        this.parametersOnly = parametersOnly;
    }

    /** A builder for the model's modules, in the order they are added. */
    public static Builder builder() {
        return new Builder();
    }

    // ---------------------------------------------------------------- modules

    /** All module paths (linear, embedding and conv2d; not the parameters-only ones), in insertion order. */
    public List<String> modulePaths() {
        return List.copyOf(order);
    }

    /** The {@link Builder#parametersOnly parameters-only} modules: path → parameter count, in order; unmodifiable. */
    public Map<String, Long> parametersOnlyModules() {
        return Collections.unmodifiableMap(parametersOnly);
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
        ModelAdapters.apply(this, config, path -> matchesName(path, names), "target modules " + names);
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
        ModelAdapters.apply(this, config, path -> regex.matcher(path).matches(), "target regex '" + regex.pattern() + "'");
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

    /** The LoRA-carrying modules in model order. */
    List<TargetedModule> targets() {
        return order.stream().filter(p -> targeted.containsKey(p) || targetedEmbeddings.containsKey(p)
                || targetedConvs.containsKey(p)).map(p -> new TargetedModule(p, targeted.get(p),
                targetedEmbeddings.get(p), targetedConvs.get(p))).toList();
    }

    List<String> targetPaths() {
        return targets().stream().map(TargetedModule::path).toList();
    }

    boolean noTargets() {
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
        ModelAdapters.addToAll(targeted, targetedEmbeddings, targetedConvs, name, config);
    }

    /**
     * Makes {@code name} the active adapter of every targeted module. All or nothing: the name is checked on every
     * module and no module may be merged.
     *
     * @throws IllegalArgumentException for a name unknown to some targeted module
     * @throws IllegalStateException    before {@link #applyLora}, or while merged
     */
    public void setActiveAdapter(String name) {
        ModelAdapters.setActiveAdapter(this, name);
    }

    /** The active adapter of the targeted modules, or null before {@link #applyLora}. */
    public String activeAdapter() {
        List<TargetedModule> t = targets();
        return t.isEmpty() ? null : t.get(0).activeAdapter();
    }

    /** Adapter names of the targeted modules (all have the same), in the order they were added. */
    public List<String> adapterNames() {
        List<TargetedModule> t = targets();
        return t.isEmpty() ? List.of() : t.get(0).adapterNames();
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
     * A mixed-adapter batch through linear module {@code path} (PEFT's {@code adapter_names}): row {@code i} of
     * {@code x [n, in]} (leading dimensions folded) uses adapter {@code adapterPerRow[i]}, or the base module where
     * the entry is null or {@link LoraLinear#BASE_MODEL}; see {@link LoraLinear#forward(INDArray, String[])}. A module
     * without LoRA gives its plain output to every row, a modules_to_save module the original's to base rows and the
     * copy's to the others, as PEFT does. Inference only.
     *
     * @param adapterPerRow one name per row, each an adapter of the model, null or {@link LoraLinear#BASE_MODEL}
     * @throws IllegalArgumentException for an embedding or conv2d module, a wrong length, an unknown name or input
     * @throws IllegalStateException    in training mode or while the module is merged
     */
    public INDArray forward(String path, INDArray x, String[] adapterPerRow) {
        return ModelAdapters.forward(this, path, x, adapterPerRow);
    }

    /**
     * Puts every module into training mode (see {@link LoraLinear#train()}): targeted modules apply dropout and
     * all modules keep what {@link LoraLinear#backward} needs, so a gradient can pass through untargeted modules
     * (as {@code dL/dx = dL/dy · W}, with no gradient for their weights) on its way to the adapters.
     */
    public LoraModel train() {
        ModelAdapters.setTraining(this, true);
        return this;
    }

    /** Puts every module into evaluation mode. */
    public LoraModel eval() {
        ModelAdapters.setTraining(this, false);
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
        ModelAdapters.merge(this, mode);
    }

    /**
     * Unmerges every targeted module; after an exact merge each {@code W} is bitwise what it was.
     *
     * @throws IllegalStateException unless every targeted module is merged (nothing is changed then)
     */
    public void unmerge() {
        ModelAdapters.unmerge(this);
    }

    /** Whether the targeted modules are merged (false before {@link #applyLora}). */
    public boolean isMerged() {
        return targets().stream().findFirst().map(TargetedModule::isMerged).orElse(false);
    }

    /**
     * PEFT's {@code merge_and_unload}: merges the active adapter into every targeted module in place (all or
     * nothing, as {@link #merge()}; nothing is merged again if the model is merged already), then drops the LoRA
     * wrappers: each targeted module becomes a plain module over the same arrays, its adapters are gone, and the
     * model is a plain model (no LoRA applied; {@link #applyLora} may be called again). Enabled modules_to_save
     * copies stay as the modules in use (the originals are dropped); disabled ones are dropped. Returns module path
     * → the module's live weight, in model order and in the module's own layout: for targeted modules the caller's
     * own arrays, now holding {@code W + s·B·A} (an embedding's table {@code T + s·(B A)^T}); nothing is copied. The
     * exact-merge records that made unmerge bit-exact are freed, so the merge cannot be undone. Layers obtained
     * earlier from {@link #module}, {@link #embedding} or {@link #conv2d} for targeted paths are stale: get them
     * again. For new arrays and an untouched model use {@link #mergedWeightsCopy()}.
     *
     * @return module path → live weight ({@code [out, in]} or {@code [in, out]}, {@code [num_embeddings, dim]},
     *         {@code [out, in, kh, kw]})
     * @throws IllegalStateException as {@link #merge()} (e.g. adapters disabled, no active adapter, some but not all
     *                               modules merged, a non-finite result); the model is then as it was
     */
    public Map<String, INDArray> mergeAndUnload() {
        return ModelAdapters.mergeAndUnload(this);
    }

    /**
     * Module path → a new array holding the plain weight: {@code W + s·B·A} of the active adapter for targeted
     * modules (an embedding's table {@code T + s·(B A)^T}), the modules_to_save copy's weight where one is enabled,
     * and a copy of {@code W} for the others, each in its module's own layout. Biases are unchanged by LoRA and are
     * not repeated here. The model is untouched (this was {@code mergeAndUnload()} before 0.2: it copies every
     * weight, doubling memory); if it is currently merged, the copies hold the merged weights.
     */
    public Map<String, INDArray> mergedWeightsCopy() {
        return ModelAdapters.mergedWeightsCopy(this);
    }

    // ---------------------------------------------------------------- adapter management

    /**
     * Deletes adapter {@code name} from every targeted module (PEFT's {@code delete_adapter}); where it was active
     * no adapter is active afterwards (the base output), not silently another. All or nothing.
     *
     * @throws IllegalArgumentException if some targeted module lacks that adapter
     * @throws IllegalStateException    before {@link #applyLora}, or while that adapter is merged into some module
     */
    public void deleteAdapter(String name) {
        ModelAdapters.deleteAdapter(this, name);
    }

    /**
     * Turns every module's adapters off, and the modules_to_save copies too (the originals are used), as PEFT's
     * {@code disable_adapter()} context does: each module then computes its base output. All or nothing.
     *
     * @throws IllegalStateException while some module is merged (its update is inside {@code W}); unmerge first
     */
    public void disableAdapters() {
        ModelAdapters.setAdaptersEnabled(this, false);
    }

    /** Turns every module's adapters, and the modules_to_save copies, back on. */
    public void enableAdapters() {
        ModelAdapters.setAdaptersEnabled(this, true);
    }

    /** Whether every targeted module's adapters are on and, if there are any, the modules_to_save copies are in use. */
    public boolean adaptersEnabled() {
        return ModelAdapters.adaptersEnabled(this);
    }

    /**
     * {@link #disableAdapters()} until the returned handle is closed, which restores each module's previous state
     * (and the modules_to_save switch) exactly, whatever it was:
     * {@code try (var off = model.adaptersDisabled()) { base = model.forward(path, x); }}.
     *
     * @throws IllegalStateException as {@link #disableAdapters()}; nothing is changed then
     */
    public AdaptersDisabled adaptersDisabled() {
        Runnable restore = ModelAdapters.enabledState(this);
        disableAdapters();
        return new AdaptersDisabled(restore);
    }

    /**
     * Adds adapter {@code newName} to every targeted module, each the exact combination {@code Σ wᵢ·sᵢ·Bᵢ·Aᵢ} of its
     * adapters {@code adapterNames} by concatenated ranks (PEFT's {@code add_weighted_adapter},
     * {@code combination_type="cat"}); see {@link LoraLinear#addWeightedAdapter}. Run-time scales count
     * ({@code sᵢ} is the adapter's current scaling). The active adapter does not change. All or nothing.
     *
     * @throws IllegalArgumentException as {@link LoraLinear#addWeightedAdapter} on any module (naming it), or if the
     *                                  model has LoRA embeddings or conv2d modules (combinations cover linear ones)
     * @throws IllegalStateException    before {@link #applyLora}
     */
    public void addWeightedAdapter(String newName, List<String> adapterNames, double[] weights) {
        ModelAdapters.addWeightedAdapter(this, newName, adapterNames, weights, null);
    }

    /**
     * Like {@link #addWeightedAdapter} with PEFT's {@code combination_type="svd"}: each module gets the best
     * rank-{@code rank} approximation of its combination; see {@link LoraLinear#addWeightedAdapterSvd}. All or nothing.
     *
     * @throws IllegalArgumentException as {@link LoraLinear#addWeightedAdapterSvd} on any module, or as
     *                                  {@link #addWeightedAdapter}
     * @throws IllegalStateException    before {@link #applyLora}
     */
    public void addWeightedAdapterSvd(String newName, List<String> adapterNames, double[] weights, int rank) {
        ModelAdapters.addWeightedAdapter(this, newName, adapterNames, weights, rank);
    }

    /**
     * Sets the run-time scale of adapter {@code name} on every targeted module (PEFT's {@code set_scale}):
     * {@code s' = scale·alpha / r}, or {@code scale·alpha / sqrt(r)} with rsLoRA; see
     * {@link LoraLinear#setAdapterScale}. Forward, mixed batches, merge, unmerge, the trainer and {@link #save}
     * (which writes {@code lora_alpha = scale·alpha}) use it. All or nothing: a scale one module's data type cannot
     * hold changes no module.
     *
     * @throws IllegalArgumentException if some targeted module lacks that adapter, or the scale is not finite or
     *                                  gives a scaling that is not finite in some module's data type
     * @throws IllegalStateException    before {@link #applyLora}, or while that adapter is merged into some module
     */
    public void setAdapterScale(String name, double scale) {
        ModelAdapters.setAdapterScale(this, name, scale);
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
        ModulesToSave.setModuleToSave(this, path, weight, bias);
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
        ModelFiles.save(this, dir, adapterName);
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
        return ModelFiles.load(this, dir, adapterName);
    }


    // ---------------------------------------------------------------- parameters

    /**
     * Parameters training updates, as PEFT counts them: the active adapter's {@code r·(in + out)} summed over
     * targeted modules, plus the weights and biases of the enabled modules_to_save copies.
     */
    public long trainableParameterCount() {
        return ParameterReport.trainable(this);
    }

    /**
     * All parameters, as PEFT's {@code print_trainable_parameters} counts them: every registered module's weight
     * and bias, targeted or not, the {@link Builder#parametersOnly parameters-only} modules (norms and other layers
     * lora4j does not compute), every adapter of every module, and the modules_to_save copies (PEFT keeps both the
     * original and the copy). Layers never registered with the builder are not counted: register every module of
     * the network (see {@link #parameterCountScope()}) to get PEFT's numbers.
     */
    public long totalParameterCount() {
        return ParameterReport.total(this);
    }

    /**
     * PEFT's {@code print_trainable_parameters()} line, to the character:
     * {@code "trainable params: 65,536 || all params: 16,842,752 || trainable%: 0.3891"} (thousands separated by
     * commas and the percentage with four decimals, whatever the default locale). It equals PEFT's on a model whose
     * every module is registered; {@link #parameterCountScope()} says what was counted.
     */
    public String trainableParametersReport() {
        return ParameterReport.line(this);
    }

    /**
     * What {@link #totalParameterCount()} counts, as a sentence, e.g. {@code "counted: 4 linear, 1 embedding, 0 conv2d
     * modules, 2 parameters-only modules, 0 modules_to_save copies; layers not registered with LoraModel.builder()
     * are not counted"}.
     */
    public String parameterCountScope() {
        return ParameterReport.scope(this);
    }

    @Override
    public String toString() {
        return "LoraModel{modules=" + order.size() + ", targeted=" + targetPaths() + ", active=" + activeAdapter()
                + ", merged=" + isMerged() + (modulesToSave().isEmpty() ? "" : ", modulesToSave=" + modulesToSave())
                + "}";
    }

    void requireApplied() {
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
        private final Map<String, Long> parametersOnly = new LinkedHashMap<>();

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
            modules.put(path, checked(path, () -> LoraLinear.base(weight, bias, layout)));
            return this;
        }

        /**
         * Adds an embedding with table {@code [num_embeddings, dim]} (PyTorch's {@code nn.Embedding} weight).
         *
         * @throws IllegalArgumentException for a blank or repeated path, or a bad table
         */
        public Builder embedding(String path, INDArray table) {
            embeddings.put(path, checked(path, () -> LoraEmbedding.base(table)));
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
            convs.put(path, checked(path, () -> LoraConv2d.base(weight, bias, stride, padding)));
            return this;
        }

        /**
         * Registers a module lora4j does not compute (a LayerNorm, an RMSNorm, a positional table, ...) by its
         * parameter count, for {@link #trainableParametersReport()} only: registering every module of a network
         * makes the report equal PEFT's {@code print_trainable_parameters()}. It is not in {@link #modulePaths()},
         * cannot carry LoRA, and has no forward.
         *
         * @param parameters the module's parameter count (PyTorch's {@code sum(p.numel())}), at least 0
         * @throws IllegalArgumentException for a blank or repeated path, or a negative count
         */
        public Builder parametersOnly(String path, long parameters) {
            checkPath(path);
            if (parameters < 0) {
                throw new IllegalArgumentException("parameters of module '" + path + "': expected >= 0, got "
                        + parameters);
            }
            parametersOnly.put(path, parameters);
            return this;
        }

        /** The module {@code make} builds for a new {@code path}, which joins the order; its errors name the path. */
        private <T> T checked(String path, Supplier<T> make) {
            checkPath(path);
            T module;
            try {
                module = make.get();
            } catch (IllegalArgumentException e) {
                throw new IllegalArgumentException("module '" + path + "': " + e.getMessage(), e);
            }
            order.add(path);
            return module;
        }

        private void checkPath(String path) {
            Objects.requireNonNull(path, "module path must not be null");
            if (path.isBlank()) {
                throw new IllegalArgumentException("module path must not be blank, got '" + path + "'");
            }
            if (modules.containsKey(path) || embeddings.containsKey(path) || convs.containsKey(path)
                    || parametersOnly.containsKey(path)) {
                throw new IllegalArgumentException("module '" + path + "' was already added");
            }
        }

        /**
         * The model.
         *
         * @throws IllegalArgumentException if no module (other than parameters-only ones) was added, or two modules' weights share memory (tied
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
                    new LinkedHashMap<>(convs), new LinkedHashMap<>(parametersOnly));
        }
    }
}
