package io.github.lora4j.model;

import io.github.lora4j.LoraConfig;
import io.github.lora4j.LoraConv2d;
import io.github.lora4j.LoraEmbedding;
import io.github.lora4j.LoraLinear;
import io.github.lora4j.LoraTrainable;
import io.github.lora4j.MergeMode;
import io.github.lora4j.WeightLayout;
import io.github.lora4j.io.AdapterFormatException;
import io.github.lora4j.io.PeftAdapterConfig;
import io.github.lora4j.io.PeftAdapterFiles;
import java.io.IOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
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
 * Map<String, INDArray> plain = model.mergeAndUnload();           // W += s·B·A in place; wrappers dropped
 * }</pre>
 *
 * <h2>Matching target modules (PEFT's rule)</h2>
 * A list of names matches a module when its path equals a name or ends with {@code "." + name}; a
 * {@link Pattern} must match the whole path ({@code re.fullmatch}). Matching nothing is an error that lists the
 * available modules, as PEFT raises one. Linear modules get {@link LoraLinear} adapters, embeddings
 * {@link LoraEmbedding} ones (PEFT's embedding init: {@code A = 0}, {@code B ~ N(0, 1)}).
 *
 * <h2>modules_to_save and tied weights</h2>
 * A module can be replaced by a fully trained copy, as PEFT's {@code modules_to_save} ({@link #setModuleToSave},
 * {@link #load}); no two modules may share weight memory ({@link Builder#build()} refuses tied weights). The
 * {@linkplain io.github.lora4j.model package documentation} says why and how.
 *
 * <h2>Who may change what</h2>
 * Weights and biases are referenced, not copied (the caller's arrays are the model's). Only {@link #merge()},
 * {@link #unmerge()} and {@link #mergeAndUnload()} write them, in place; {@link #mergedWeightsCopy()} returns new
 * arrays. Every linear module is a {@link LoraLinear} (untargeted ones without adapters compute the plain layer),
 * and each module's own lock makes its forward safe against concurrent merges of that module. Model-wide changes
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

    // Package-private: the parts of this class (ModelAdapters, ModelFiles, ModulesToSave, ParameterReport) work on it.
    /** Every module, one row each (kind, LoRA targeting, modules_to_save copy, parameters-only count), in order. */
    final ModuleTable table;
    final List<String> targetModules = new ArrayList<>();
    String targetRegex;
    LoraConfig appliedConfig;
    String baseModelNameOrPath;
    String taskType;

    LoraModel(ModuleTable table) {
        this.table = table;
    }

    /** {@return a new, empty builder} Modules join the model in the order they are added. */
    public static Builder builder() {
        return new Builder();
    }

    /** {@return all module paths (linear, embedding, conv2d; not parameters-only ones) in order, a copy} */
    public List<String> modulePaths() {
        return table.paths();
    }

    /** {@return the {@link Builder#parametersOnly parameters-only} modules: path → count, in order; a view} */
    public Map<String, Long> parametersOnlyModules() {
        return table.parametersOnlyView();
    }

    /**
     * {@return the linear layer at {@code path}, targeted or not: the live layer, so calls on it change the model}
     * Its weight and bias are the arrays given to the builder, or those of its modules_to_save copy while that is
     * enabled; after {@link #mergeAndUnload()} it is a new plain layer without adapters.
     *
     * @param path the module path given to the builder
     * @throws IllegalArgumentException for an unknown path or an embedding, listing the linear modules
     */
    public LoraLinear module(String path) {
        return ModuleSet.module(this, path);
    }

    /**
     * {@return the embedding at {@code path}: the live layer, not a copy}
     *
     * @param path the module path given to the builder
     * @throws IllegalArgumentException for an unknown path or a linear module, listing the embeddings
     */
    public LoraEmbedding embedding(String path) {
        return ModuleSet.embedding(this, path);
    }

    /**
     * {@return the Conv2d module at {@code path}: the live layer, not a copy}
     *
     * @param path the module path given to the builder
     * @throws IllegalArgumentException for an unknown path or another kind of module, listing the conv modules
     */
    public LoraConv2d conv2d(String path) {
        return ModuleSet.conv2d(this, path);
    }

    /**
     * {@return the linear modules that carry LoRA adapters: path → live layer, in model order; an unmodifiable view}
     * This is the map {@code io.github.lora4j.io.PeftAdapterFiles} saves and loads.
     */
    public Map<String, LoraLinear> loraModules() {
        return table.targetedView(LoraLinear.class);
    }

    /** {@return the embeddings that carry LoRA adapters: path → live layer, in model order; a view} */
    public Map<String, LoraEmbedding> loraEmbeddings() {
        return table.targetedView(LoraEmbedding.class);
    }

    /** {@return the Conv2d modules that carry LoRA adapters: path → live layer, in model order; a view} */
    public Map<String, LoraConv2d> loraConvs() {
        return table.targetedView(LoraConv2d.class);
    }

    /**
     * {@return the names given to {@link #applyLora(LoraConfig, List)}, or a one-element list holding the regex given
     * to {@link #applyLora(LoraConfig, Pattern)}; empty before any apply; a copy}
     */
    public List<String> targetModules() {
        return targetRegex != null ? List.of(targetRegex) : List.copyOf(targetModules);
    }

    /** {@return whether the targets were a regex} PEFT stores a string then, not a list. */
    public boolean targetIsRegex() {
        return targetRegex != null;
    }

    /**
     * {@return this model} Sets the {@code base_model_name_or_path} that {@link #save} writes ({@link #load} too).
     *
     * @param nameOrPath the base model's name or path; null writes null
     */
    public LoraModel setBaseModelNameOrPath(String nameOrPath) {
        this.baseModelNameOrPath = nameOrPath;
        return this;
    }

    /** {@return the {@code base_model_name_or_path} {@link #save} writes, or null} */
    public String baseModelNameOrPath() {
        return baseModelNameOrPath;
    }

    /**
     * {@return this model} Sets the {@code task_type} that {@link #save} writes for every adapter: one of PEFT's
     * {@link PeftAdapterConfig#TASK_TYPES} ({@code "CAUSAL_LM"} for PEFT's
     * {@code AutoPeftModelForCausalLM}, {@code "SEQ_CLS"} for {@code AutoPeftModelForSequenceClassification}, ...), or
     * null to write null (PEFT's plain {@code PeftModel}). {@link #load} of a model without LoRA takes the file's
     * value, whatever string it is, so a file saves back as it came.
     *
     * @param taskType one of PEFT's task types, or null
     * @throws IllegalArgumentException for any other string (a typo such as {@code "CASUAL_LM"} would make PEFT
     *                                  refuse the folder); the model is unchanged then
     */
    public LoraModel setTaskType(String taskType) {
        if (taskType != null && !PeftAdapterConfig.TASK_TYPES.contains(taskType)) {
            throw new IllegalArgumentException("task_type: expected null or one of PEFT's TaskType values "
                    + PeftAdapterConfig.TASK_TYPES + ", got '" + taskType + "'");
        }
        this.taskType = taskType;
        return this;
    }

    /** {@return the {@code task_type} {@link #save} writes, or null} */
    public String taskType() {
        return taskType;
    }

    /**
     * Adds adapter {@value #DEFAULT_ADAPTER} (active) to every module whose path equals one of {@code targetNames}
     * or ends with {@code "." + name}. Module {@code path} gets {@link LoraConfig#forModule config.forModule(path)},
     * so equal-shaped modules do not start from identical {@code A} (as PEFT's global random stream gives) and a
     * layer wrapped by hand with that config starts where the module does; {@code B = 0} (embeddings: {@code A = 0}),
     * so outputs do not change.
     *
     * @param config      the adapters' configuration, its seed mixed per module
     * @param targetNames module names (PEFT's {@code target_modules} list), none blank
     * @return this model
     * @throws IllegalArgumentException if nothing matches (the message lists the available modules), a name is
     *                                  blank, or a
     *                                  matched module is a modules_to_save copy; nothing is changed then
     * @throws IllegalStateException    if LoRA was already applied (use {@link #addAdapter} for more adapters)
     */
    public LoraModel applyLora(LoraConfig config, List<String> targetNames) {
        ModelAdapters.applyByNames(this, config, targetNames);
        return this;
    }

    /**
     * Like {@link #applyLora(LoraConfig, List)} for the modules whose whole path matches {@code regex}
     * (PEFT's {@code target_modules} given as a string: {@code re.fullmatch}).
     *
     * @param config the adapters' configuration, its seed mixed per module
     * @param regex  matched against each whole module path
     * @return this model
     * @throws IllegalArgumentException as {@link #applyLora(LoraConfig, List)}
     * @throws IllegalStateException    if LoRA was already applied
     */
    public LoraModel applyLora(LoraConfig config, Pattern regex) {
        ModelAdapters.applyByRegex(this, config, regex);
        return this;
    }

    /**
     * Adds adapter {@code name} to every targeted module, not active (see {@link #setActiveAdapter}); module
     * {@code path} gets {@code config.forModule(path)}. All or nothing: the name is checked on every module first. Any
     * rank {@code >= 1} is accepted, also above a module's {@code min(in, out)} (as in PEFT).
     *
     * @param name   the new adapter's name
     * @param config its configuration, the seed mixed per module
     * @throws IllegalStateException    before {@link #applyLora}
     * @throws IllegalArgumentException for a taken or blank name
     */
    public void addAdapter(String name, LoraConfig config) {
        ModelAdapters.addAdapter(this, name, config);
    }

    /**
     * Makes {@code name} the active adapter of every targeted module. All or nothing: the name is checked on every
     * module and no module may be merged.
     *
     * @param name an adapter every targeted module has
     * @throws IllegalArgumentException for a name unknown to some targeted module
     * @throws IllegalStateException    before {@link #applyLora}, or while merged
     */
    public void setActiveAdapter(String name) {
        ModelAdapters.setActiveAdapter(this, name);
    }

    /** {@return the targeted modules' active adapter; null before {@link #applyLora} or once it is deleted} */
    public String activeAdapter() {
        List<ModuleEntry> t = table.targeted();
        return t.isEmpty() ? null : t.get(0).module.activeAdapter();
    }

    /** {@return the targeted modules' adapter names (all have the same) in the order added; empty before apply} */
    public List<String> adapterNames() {
        List<ModuleEntry> t = table.targeted();
        return t.isEmpty() ? List.of() : t.get(0).module.adapterNames();
    }

    /**
     * The output of module {@code path} for input {@code x}: for a linear module {@code x [n, in]} (or
     * {@code [..., in]}) gives {@code [n, out]} (see {@link LoraLinear#forward(INDArray)}); for an embedding
     * {@code x} holds token ids of any shape {@code [...]} and gives {@code [..., dim]} (see
     * {@link LoraEmbedding#forward(INDArray)}); for a conv2d module see {@link LoraConv2d#forward(INDArray)}.
     *
     * @param path the module path
     * @param x    the input; not changed
     * @return a new array
     * @throws IllegalArgumentException for an unknown path or an input the module refuses
     */
    public INDArray forward(String path, INDArray x) {
        return ModelAdapters.forward(this, path, x);
    }

    /**
     * A mixed-adapter batch through linear module {@code path} (PEFT's {@code adapter_names}): row {@code i} of
     * {@code x [n, in]} (leading dimensions folded) uses adapter {@code adapterPerRow[i]}, or the base module where
     * the entry is null or {@link LoraLinear#BASE_MODEL}; see {@link LoraLinear#forward(INDArray, String[])}. A module
     * without LoRA gives its plain output to every row, a modules_to_save module the original's to base rows and the
     * copy's to the others, as PEFT does. In training mode (see {@link #train()}) each adapter of a LoRA module gets
     * the gradients of its own rows from the module's backward.
     *
     * @param path          a linear module
     * @param x             the input {@code [n, in]} or {@code [..., in]}; not changed
     * @param adapterPerRow one name per row, each an adapter of the model, null or {@link LoraLinear#BASE_MODEL}
     * @return a new array {@code [n, out]} (or {@code [..., out]})
     * @throws IllegalArgumentException for an embedding or conv2d module, a wrong length, an unknown name or input
     * @throws IllegalStateException    while the module is merged, or in training mode when a modules_to_save module
     *                                  would give some rows the copy's output and others the original's
     */
    public INDArray forward(String path, INDArray x, String[] adapterPerRow) {
        return ModelAdapters.forward(this, path, x, adapterPerRow);
    }

    /**
     * Puts every module into training mode (see {@link LoraLinear#train()}): targeted modules apply dropout and
     * all modules keep what {@link LoraLinear#backward} needs, so a gradient can pass through untargeted modules
     * (as {@code dL/dx = dL/dy · W}, with no gradient for their weights) on its way to the adapters.
     *
     * @return this model
     */
    public LoraModel train() {
        ModelAdapters.setTraining(this, true);
        return this;
    }

    /** {@return this model} Puts every module into evaluation mode. */
    public LoraModel eval() {
        ModelAdapters.setTraining(this, false);
        return this;
    }

    /** Clears the adapter gradients of every targeted module. */
    public void zeroGrad() {
        for (ModuleEntry e : table.targeted()) {
            if (e.module instanceof LoraTrainable t) {
                t.zeroGrad();
            }
        }
    }

    /** {@link #merge(MergeMode) Merges} every targeted module the {@link MergeMode#EXACT exact} way; same refusals. */
    public void merge() {
        merge(MergeMode.EXACT);
    }

    /**
     * Merges the active adapter into {@code W} of every targeted module (embedding tables too), in place. All or
     * nothing: if merging module {@code k} fails (e.g. a non-finite result), the modules already merged are unmerged
     * again (bit for bit with {@link MergeMode#EXACT}; {@link MergeMode#FAST} may leave an ulp) and it is rethrown.
     *
     * @param mode how to merge (and so how exactly unmerge restores {@code W})
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

    /** {@return whether the targeted modules are merged; false before {@link #applyLora}} */
    public boolean isMerged() {
        List<ModuleEntry> t = table.targeted();
        return !t.isEmpty() && t.get(0).module.isMerged();
    }

    /**
     * PEFT's {@code merge_and_unload}: merges the active adapter into every targeted module in place (all or
     * nothing, as {@link #merge()}; not again if already merged), then drops the LoRA wrappers: each targeted module
     * becomes a plain module over the same arrays, and the model is a plain model ({@link #merge()} and
     * {@link #addAdapter} are refused until {@link #applyLora} is called again). Enabled modules_to_save copies stay
     * in use (the originals are dropped), disabled ones are dropped. The merge cannot be undone. Layers got earlier
     * from {@link #module}, {@link #embedding} or {@link #conv2d} are stale. {@link #mergedWeightsCopy()} copies.
     *
     * @return module path → the module's live weight, in model order and in the module's own layout
     *         ({@code [out, in]} or {@code [in, out]}, {@code [num_embeddings, dim]}, {@code [out, in, kh, kw]}): for
     *         targeted modules the caller's own arrays, now holding {@code W + s·B·A} (an embedding's table
     *         {@code T + s·(B A)^T}); nothing is copied
     * @throws IllegalStateException as {@link #merge()} (e.g. adapters disabled, no active adapter, some but not all
     *                               modules merged, a non-finite result); the model is then as it was
     */
    public Map<String, INDArray> mergeAndUnload() {
        return ModelAdapters.mergeAndUnload(this);
    }

    /**
     * The plain weights as new arrays; the model is untouched (this was {@code mergeAndUnload()} before 0.2: it
     * copies every weight, doubling memory). If the model is merged, the copies hold the merged weights.
     *
     * @return module path → a new array in the module's own layout: {@code W + s·B·A} of the active adapter for
     *         targeted modules (an embedding's table {@code T + s·(B A)^T}), the modules_to_save copy's weight where
     *         one is enabled, and a copy of {@code W} for the others; biases are unchanged by LoRA and not repeated
     */
    public Map<String, INDArray> mergedWeightsCopy() {
        return ModelAdapters.mergedWeightsCopy(this);
    }

    /**
     * Deletes adapter {@code name} from every targeted module (PEFT's {@code delete_adapter}); where it was active,
     * no adapter is active afterwards (the base output), not silently another. All or nothing.
     *
     * @param name an adapter of every targeted module
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

    /** {@return whether every targeted module's adapters, and any modules_to_save copies, are in use} */
    public boolean adaptersEnabled() {
        return ModelAdapters.adaptersEnabled(this);
    }

    /**
     * {@link #disableAdapters()} until the returned handle is closed, which restores each module's previous state
     * (and the modules_to_save switch) exactly, whatever it was, so handles nest:
     * {@code try (var off = model.adaptersDisabled()) { base = model.forward(path, x); }}.
     *
     * @return the handle; close it once (closing again does nothing)
     * @throws IllegalStateException as {@link #disableAdapters()}; nothing is changed then
     */
    public AdaptersDisabled adaptersDisabled() {
        return ModelAdapters.adaptersDisabled(this);
    }

    /**
     * Adds adapter {@code newName} to every targeted module, each the exact combination {@code Σ wᵢ·sᵢ·Bᵢ·Aᵢ} of its
     * adapters {@code adapterNames} by concatenated ranks (PEFT's {@code add_weighted_adapter},
     * {@code combination_type="cat"}); see {@link LoraLinear#addWeightedAdapter}. Run-time scales count
     * ({@code sᵢ} is the adapter's current scaling). The active adapter does not change. All or nothing.
     *
     * @param newName      the new adapter's name
     * @param adapterNames the adapters to combine, each known to every module
     * @param weights      one weight per adapter
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
     * @param newName      the new adapter's name
     * @param adapterNames the adapters to combine, each known to every module
     * @param weights      one weight per adapter
     * @param rank         the new adapter's rank, at most every module's {@code min(in, out)}
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
     * (which writes {@code lora_alpha = scale·alpha}) use it. All or nothing.
     *
     * @param name  an adapter of every targeted module
     * @param scale any finite value; 1 restores the configured scaling exactly
     * @throws IllegalArgumentException if some targeted module lacks that adapter, or the scale is not finite or
     *                                  gives a scaling that is not finite in some module's data type
     * @throws IllegalStateException    before {@link #applyLora}, or while that adapter is merged into some module
     */
    public void setAdapterScale(String name, double scale) {
        ModelAdapters.setAdapterScale(this, name, scale);
    }

    /**
     * Replaces module {@code path} by a fully trained copy, as PEFT's {@code modules_to_save}. The arrays are
     * referenced; the original is kept ({@link #unloadModulesToSave()}). The copy is in use at once if enabled.
     *
     * @param path   a linear module or embedding without LoRA
     * @param weight the weight in the module's layout, or an embedding's table {@code [num_embeddings, dim]}
     * @param bias   a linear module's bias {@code [out]}, or null: a copy of the original's (embeddings: null)
     * @throws IllegalArgumentException for an unknown or LoRA-adapted module, a module that already has a copy, a
     *                                  shape or type unlike the original's, a non-finite value, or a weight sharing
     *                                  memory with another module's
     */
    public void setModuleToSave(String path, INDArray weight, INDArray bias) {
        ModulesToSave.setModuleToSave(this, path, weight, bias);
    }

    /** {@return the paths of the modules replaced by modules_to_save copies, in model order; a new list} */
    public List<String> modulesToSave() {
        return ModulesToSave.paths(this);
    }

    /**
     * Switches between the modules_to_save copies and the originals (PEFT's disabled adapter context); nothing is
     * deleted.
     *
     * @param enabled {@code true} (the default) to use the copies, {@code false} the originals
     */
    public void setModulesToSaveEnabled(boolean enabled) {
        ModulesToSave.setEnabled(this, enabled);
    }

    /** {@return whether the modules_to_save copies are in use (unless {@link #setModulesToSaveEnabled} said no)} */
    public boolean modulesToSaveEnabled() {
        return table.copiesEnabled;
    }

    /** Drops every modules_to_save copy: the original modules, with their untouched arrays, are the model's again. */
    public void unloadModulesToSave() {
        ModulesToSave.unload(this);
    }

    /**
     * Saves adapter {@code adapterName} of the targeted modules as PEFT files ({@code adapter_model.safetensors},
     * F32, and {@code adapter_config.json}) in {@code dir}, atomically, with PEFT's tensor keys
     * ({@code base_model.model.<module path>.lora_A.weight}, ...) and the modules_to_save copies; see
     * {@link PeftAdapterFiles.Saver#save}. {@code target_modules} is what {@link #applyLora} was given,
     * {@code lora_alpha} the effective {@code scale·alpha} ({@link #setAdapterScale}); other ranks and alphas go to
     * {@code rank_pattern} / {@code alpha_pattern}.
     *
     * @param dir         the directory, created if missing
     * @param adapterName the adapter to save
     * @throws IllegalStateException    before {@link #applyLora}
     * @throws IllegalArgumentException as {@link PeftAdapterFiles.Saver#save}, e.g. no module has that adapter or a
     *                                  tensor holds NaN
     * @throws IOException              if writing fails; existing files are then left as they were
     */
    public void save(Path dir, String adapterName) throws IOException {
        ModelFiles.save(this, dir, adapterName);
    }

    /**
     * Saves every adapter of the model into {@code dir} as PEFT's {@code save_pretrained} does with several adapters
     * ({@link PeftAdapterFiles.Saver#saveAll}): adapter {@value #DEFAULT_ADAPTER} at the top of {@code dir}, each
     * other adapter in the subfolder {@code dir/<name>}, each written as {@link #save(Path, String)} writes one (its own
     * rank, alpha, DoRA magnitude; the model's targets, base model name and task type). {@link #load(Path)} reads
     * the folder back; PEFT reads it with {@code PeftModel.from_pretrained(base, dir)} plus
     * {@code load_adapter(dir + "/" + name, adapter_name=name)} for the others.
     *
     * <p>All or nothing: every adapter is checked and written to a staging folder first; if anything fails, the model
     * is unchanged and {@code dir} holds what it held before.
     *
     * @param dir the folder, created if absent
     * @throws IllegalStateException    before {@link #applyLora}
     * @throws IllegalArgumentException if an adapter name cannot be a folder name ({@code "../x"}, an absolute path,
     *                                  a name with {@code '/'}, {@code '\'}, {@code ':'} or a leading {@code '.'}),
     *                                  the model has modules_to_save copies and several adapters (PEFT keeps a copy
     *                                  per adapter, lora4j one for all), or as {@link #save(Path, String)}; nothing is
     *                                  written then
     * @throws IOException              if writing fails; {@code dir} is then as it was
     */
    public void save(Path dir) throws IOException {
        ModelFiles.saveAll(this, dir);
    }

    /**
     * Loads every adapter of a folder in PEFT's several-adapter layout ({@link #save(Path)}): the adapter at the top
     * of {@code dir} as {@value #DEFAULT_ADAPTER} (the active one on a model without LoRA), then each subfolder that
     * holds an adapter, by name, under its folder's name, each as {@link #load(Path, String)} loads one. To see what
     * is there without loading, use {@link PeftAdapterFiles#adapterFolders}; to load one adapter of the folder, pass
     * its folder to {@link #load(Path, String)}.
     *
     * <p>All or nothing: every folder is read and checked before the model changes; if a later adapter still does
     * not fit the model, the adapters this call loaded are removed again and the model is as it was.
     *
     * @param dir the folder
     * @return the adapters loaded, in the order loaded: {@value #DEFAULT_ADAPTER} first (if present), then by name
     * @throws IllegalArgumentException if the folder holds no adapter, a name is already the model's, an adapter does
     *                                  not fit the model (as {@link #load(Path, String)}), adapters cover different
     *                                  modules, or the folder holds several adapters and one carries
     *                                  modules_to_save (lora4j keeps one copy for all adapters)
     * @throws AdapterFormatException   for a corrupt, hostile or unsupported file or folder (see
     *                                  {@link PeftAdapterFiles#adapterFolders})
     * @throws IOException              if reading fails
     */
    public List<String> load(Path dir) throws IOException {
        return ModelFiles.loadAll(this, dir);
    }

    /**
     * Loads the PEFT adapter in {@code dir} as adapter {@code adapterName} ({@link PeftAdapterFiles#load(Path, Map,
     * Map, String)}): linear, embedding and Conv2d LoRA into their modules, each with its own rank and alpha; full
     * tensors (modules_to_save, trained biases) as copies ({@link #setModuleToSave}); {@code base_model_name_or_path}
     * too. On a model without LoRA the modules the file names become the targeted modules, {@code adapterName}
     * active; with LoRA applied the file must cover exactly the targeted modules and the active adapter stays. All
     * or nothing: the header is checked against the model before any tensor is read.
     *
     * @param dir         a directory holding {@code adapter_config.json} and {@code adapter_model.safetensors}
     * @param adapterName the name the loaded adapter gets
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

    /**
     * {@return the parameters training updates, as PEFT counts them} That is the active adapter's
     * {@code r·(in + out)} ({@code + out} for DoRA) summed over targeted modules (none active: 0), plus the weights and
     * biases of the enabled
     * modules_to_save copies.
     */
    public long trainableParameterCount() {
        return ParameterReport.trainable(this);
    }

    /**
     * {@return all parameters, as PEFT's {@code print_trainable_parameters} counts them} That is every registered
     * module's weight and bias, targeted or not, the {@link Builder#parametersOnly parameters-only} modules, every
     * adapter of every module, and the modules_to_save copies beside their originals (as PEFT keeps both). Layers
     * never registered are not counted: register every module ({@link #parameterCountScope()}) for PEFT's numbers.
     */
    public long totalParameterCount() {
        return ParameterReport.total(this);
    }

    /**
     * {@return PEFT's {@code print_trainable_parameters()} line, to the character} For example {@code "trainable
     * params: 65,536 || all params: 16,842,752 || trainable%: 0.3891"}, whatever the default locale. It equals
     * PEFT's on a model whose every module is registered; {@link #parameterCountScope()} says what was counted.
     */
    public String trainableParametersReport() {
        return ParameterReport.line(this);
    }

    /**
     * {@return what {@link #totalParameterCount()} counts, as a sentence} For example {@code "counted: 4 linear, 1
     * embedding, 0 conv2d modules, 2 parameters-only modules, 0 modules_to_save copies; layers not registered with
     * LoraModel.builder() are not counted"}.
     */
    public String parameterCountScope() {
        return ParameterReport.scope(this);
    }

    @Override
    public String toString() {
        return ParameterReport.describe(this);
    }

    /**
     * Collects named modules; each is validated when added (shape, data type, finite values) as
     * {@link LoraLinear#base} does, and {@link #build()} refuses weights that share memory. Arrays are referenced,
     * not copied. Errors name the module path.
     */
    public static final class Builder {
        private final ModuleSet set = new ModuleSet();

        private Builder() {
        }

        /**
         * {@return this builder} Adds a linear module (PyTorch's {@code nn.Linear}).
         *
         * @param path   the module path, new and not blank
         * @param weight frozen weight {@code [out, in]}, FLOAT or DOUBLE, finite; referenced
         * @param bias   frozen bias {@code [out]} of the weight's type, or null
         * @throws IllegalArgumentException for a blank or repeated path, or a bad weight or bias
         */
        public Builder linear(String path, INDArray weight, INDArray bias) {
            return add(path, weight, bias, WeightLayout.OUT_IN);
        }

        /**
         * {@return this builder} Adds a linear module with weight {@code [in, out]} (DL4J's {@code DenseLayer},
         * GPT-2's {@code Conv1D}, PEFT's {@code fan_in_fan_out}); used through transpose flags, never copied.
         *
         * @param path   the module path, new and not blank
         * @param weight frozen weight {@code [in, out]}, FLOAT or DOUBLE, finite; referenced
         * @param bias   frozen bias {@code [out]} of the weight's type, or null
         * @throws IllegalArgumentException for a blank or repeated path, or a bad weight or bias
         */
        public Builder linearInOut(String path, INDArray weight, INDArray bias) {
            return add(path, weight, bias, WeightLayout.IN_OUT);
        }

        /**
         * {@return this builder} Adds a linear module whose weight is stored in {@code layout}.
         *
         * @param path   the module path, new and not blank
         * @param weight frozen weight in {@code layout}, FLOAT or DOUBLE, finite; referenced
         * @param bias   frozen bias {@code [out]} of the weight's type, or null
         * @param layout how {@code weight} is stored
         * @throws IllegalArgumentException for a blank or repeated path, or a bad weight or bias
         */
        public Builder add(String path, INDArray weight, INDArray bias, WeightLayout layout) {
            set.add(path, () -> LoraLinear.base(weight, bias, layout));
            return this;
        }

        /**
         * {@return this builder} Adds an embedding (PyTorch's {@code nn.Embedding}).
         *
         * @param path  the module path, new and not blank
         * @param table frozen table {@code [num_embeddings, dim]}, FLOAT or DOUBLE, finite; referenced
         * @throws IllegalArgumentException for a blank or repeated path, or a bad table
         */
        public Builder embedding(String path, INDArray table) {
            set.add(path, () -> LoraEmbedding.base(table));
            return this;
        }

        /**
         * {@return this builder} Adds a 2-D convolution for PEFT's Conv2d LoRA ({@link LoraConv2d}: no training).
         *
         * @param path    the module path, new and not blank
         * @param weight  frozen kernel {@code [out, in, kh, kw]}, c-order, contiguous; referenced
         * @param bias    frozen bias {@code [out]}, or null
         * @param stride  {@code {sy, sx}}
         * @param padding zero padding {@code {ph, pw}}
         * @throws IllegalArgumentException for a blank or repeated path, or a bad kernel, bias, stride or padding
         */
        public Builder conv2d(String path, INDArray weight, INDArray bias, int[] stride, int[] padding) {
            set.add(path, () -> LoraConv2d.base(weight, bias, stride, padding));
            return this;
        }

        /**
         * {@return this builder} Registers a module lora4j does not compute (a LayerNorm, an RMSNorm, ...) by its
         * parameter count, for {@link #trainableParametersReport()} only: registering every module of a network makes
         * the report PEFT's. It is not in {@link #modulePaths()}, cannot carry LoRA, and has no forward.
         *
         * @param path       the module path, new and not blank
         * @param parameters the module's parameter count (PyTorch's {@code sum(p.numel())}), at least 0
         * @throws IllegalArgumentException for a blank or repeated path, or a negative count
         */
        public Builder parametersOnly(String path, long parameters) {
            set.parametersOnly(path, parameters);
            return this;
        }

        /**
         * {@return a new model over the arrays given, no LoRA applied}
         *
         * @throws IllegalArgumentException if no module other than parameters-only ones was added, or two modules'
         *                                  weights share memory (tied weights), naming both
         */
        public LoraModel build() {
            return set.build();
        }
    }
}
