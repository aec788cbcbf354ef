package io.github.lora4j.samediff;

import io.github.lora4j.AllOrNothing;
import io.github.lora4j.LoraAdapter;
import io.github.lora4j.LoraConfig;
import io.github.lora4j.LoraInit;
import io.github.lora4j.LoraLinear;
import io.github.lora4j.io.AdapterTensors;
import io.github.lora4j.io.PeftAdapterConfig;
import io.github.lora4j.io.PeftAdapterFiles;
import java.io.IOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.function.Consumer;
import java.util.function.Function;
import org.nd4j.autodiff.samediff.SDVariable;
import org.nd4j.autodiff.samediff.SameDiff;
import org.nd4j.autodiff.samediff.VariableType;

/**
 * The LoRA adapters that {@link LoraSameDiff#apply} added to a {@link SameDiff} graph, and what it froze: merge them
 * into the weights, take them out again, save and load them as PEFT files.
 *
 * <pre>{@code
 * SameDiff sd = SameDiff.fromFlatBuffers(bytes);                  // or any graph built with nn().linear / mmul
 * LoraSameDiffModel lora = LoraSameDiff.apply(sd, LoraConfig.builder().rank(8).alpha(16).build(), "fc0/weight");
 * sd.setTrainingConfig(...); sd.fit(data);                         // trains fc0/lora_A and fc0/lora_B only
 * lora.save(dir);                                                  // PEFT: base_model.model.fc0.lora_A.weight, ...
 * lora.mergeAndUnload();                                           // the original graph, W += s·B·A
 * }</pre>
 *
 * <h2>Who may change what</h2>
 * The weights stay the graph's own arrays (see {@link LoraSameDiff}); only {@link #merge()}, {@link #unmerge()} and
 * {@link #mergeAndUnload()} write them. Model-wide calls are all or nothing. Not thread-safe: change the graph while
 * nothing runs it.
 */
public final class LoraSameDiffModel {

    private final SameDiff sd;
    private final Map<String, LoraSameDiff> adapted;
    private final List<String> frozen;
    private boolean unloaded;

    LoraSameDiffModel(SameDiff sd, Map<String, LoraSameDiff> adapted, List<String> frozen) {
        this.sd = sd;
        this.adapted = Collections.unmodifiableMap(new LinkedHashMap<>(adapted));
        this.frozen = List.copyOf(frozen);
    }

    /**
     * The graph (changed in place by {@link LoraSameDiff#apply}).
     *
     * @return the graph itself (not a copy)
     */
    public SameDiff sameDiff() {
        return sd;
    }

    /**
     * The adapted weights: weight variable name → its adapter, in graph order; unmodifiable.
     *
     * @return an unmodifiable map; the adapters are live objects, not copies
     */
    public Map<String, LoraSameDiff> adapted() {
        return adapted;
    }

    /**
     * The adapter of weight variable {@code weightName}.
     *
     * @param weightName a weight variable name, a key of {@link #adapted()}
     * @return the live adapter of that weight
     * @throws IllegalArgumentException if that weight was not adapted, listing those that were
     */
    public LoraSameDiff adapter(String weightName) {
        LoraSameDiff a = adapted.get(weightName);
        if (a == null) {
            throw new IllegalArgumentException("weight '" + weightName + "' was not adapted; adapted: " + adapted.keySet());
        }
        return a;
    }

    /**
     * Variables that were trainable and that apply made constants (the targeted weights among them).
     *
     * @return an immutable list of variable names
     */
    public List<String> frozenVariables() {
        return frozen;
    }

    /**
     * Names of the graph's trainable variables now: the adapters' A and B and any kept trainable.
     *
     * @return a new list of the variable names, in the graph's order; the caller may modify it
     */
    public List<String> trainableVariables() {
        List<String> out = new ArrayList<>();
        for (SDVariable v : sd.variables()) {
            if (v.getVariableType() == VariableType.VARIABLE) {
                out.add(v.name());
            }
        }
        return out;
    }

    /**
     * Parameters of the adapters, {@code r·(in + out)} (DoRA: {@code + out}) summed over the adapted weights.
     *
     * @return the number of elements of every {@code A} and {@code B}
     * @throws IllegalStateException after {@link #unload()} (the adapters are gone)
     */
    public long adapterParameterCount() {
        requireLoaded();
        return adapted.values().stream().mapToLong(LoraSameDiff::parameterCount).sum();
    }

    // ---------------------------------------------------------------- merge

    /**
     * Merges every adapter into its weight ({@link LoraSameDiff#merge()}). All or nothing: if one fails, those
     * already merged are unmerged again, bit-exactly, and that adapter's exception itself is rethrown. Should an
     * unmerge of the rollback fail too (not expected: unmerge only restores what merge recorded), the rollback goes
     * on with the others and each such failure is attached to the rethrown exception as suppressed, naming the
     * weight that stays merged.
     *
     * @throws IllegalStateException if some adapter is already merged, after unload, or as {@link LoraSameDiff#merge()}
     */
    public void merge() {
        requireLoaded();
        for (LoraSameDiff a : adapted.values()) {
            if (a.isMerged()) {
                throw new IllegalStateException("'" + a.weightName() + "' is already merged; unmerge() first");
            }
        }
        mergeAll(List.copyOf(adapted.values()));
    }

    /** Merges {@code toMerge}, all or nothing. */
    private static void mergeAll(List<LoraSameDiff> toMerge) {
        allOrNothing(toMerge, LoraSameDiff::merge, LoraSameDiff::unmerge, LoraSameDiff::weightName, "merging",
                "unmerging", "merged");
    }

    /**
     * Applies {@code step} to each of {@code items} in order; on the first failure applies {@code undo} to those
     * done, in reverse, and rethrows that failure itself, with any failure of the rollback attached as suppressed
     * (the rollback goes on past it). The three words name step, undo and the state an item that could not be
     * undone stays in, for the suppressed exceptions' messages. The rule is {@link AllOrNothing#run}.
     */
    static <T> void allOrNothing(List<T> items, Consumer<? super T> step, Consumer<? super T> undo,
                                 Function<? super T, String> name, String stepping, String undoing, String stays) {
        AllOrNothing.run(items, step, undo, name, stepping, undoing, stays);
    }

    /**
     * Unmerges every adapter; each weight is then bitwise what it was before {@link #merge()}. All or nothing, as
     * {@link #merge()}: should one unmerge fail, those already unmerged are merged again and its exception is
     * rethrown.
     *
     * @throws IllegalStateException unless every adapter is merged (nothing is changed then), after unload, or as
     *                               {@link LoraSameDiff#unmerge()}
     */
    public void unmerge() {
        requireLoaded();
        for (LoraSameDiff a : adapted.values()) {
            if (!a.isMerged()) {
                throw new IllegalStateException("'" + a.weightName() + "' is not merged; nothing to unmerge");
            }
        }
        allOrNothing(List.copyOf(adapted.values()), LoraSameDiff::unmerge, LoraSameDiff::merge,
                LoraSameDiff::weightName, "unmerging", "merging again", "unmerged");
    }

    /**
     * Whether every adapter is merged into its weight (each can also be merged alone, through {@link #adapter}).
     *
     * @return {@code true} if every adapter is merged (also when there are none)
     */
    public boolean isMerged() {
        return adapted.values().stream().allMatch(LoraSameDiff::isMerged);
    }

    /**
     * Takes the adapters out of the graph: every LoRA op and variable is removed, each adapted op's output gets
     * its own name back, and the variables apply froze are trainable again. If merged, the weights keep the merged
     * values (that is {@link #mergeAndUnload()}); otherwise the graph is the one apply was given, bit for bit.
     * This model is unusable afterwards.
     *
     * @return the graph
     * @throws IllegalStateException if already unloaded, or if an op added after apply reads a LoRA variable (an
     *                               adapter's {@code A}, {@code B}, scaling or an intermediate of its path), one is a
     *                               loss variable, or one was removed by hand; nothing is changed then
     */
    public SameDiff unload() {
        checkUnloadable();
        return unloadChecked();
    }

    /** {@link #unload()} once {@link #checkUnloadable()} has passed. */
    private SameDiff unloadChecked() {
        for (LoraSameDiff a : adapted.values()) {
            a.unload();
        }
        List<SDVariable> thaw = new ArrayList<>();
        for (String f : frozen) {
            thaw.add(sd.getVariable(f));
        }
        sd.convertToVariables(thaw);
        unloaded = true;
        return sd;
    }

    /**
     * PEFT's {@code merge_and_unload}: merges every adapter not yet merged into its weight, in place (all or
     * nothing), then
     * {@link #unload()}s: the graph has its original structure (ops, variables, trainable ones) with
     * {@code W + s·B·A} in the adapted weights and no LoRA ops.
     *
     * @return the graph
     * @throws IllegalStateException if already unloaded, as {@link #unload()} (checked before anything is merged), or
     *                               if a merge fails; nothing is changed then
     */
    public SameDiff mergeAndUnload() {
        checkUnloadable();
        mergeAll(adapted.values().stream().filter(a -> !a.isMerged()).toList());
        return unloadChecked();          // merging changes no graph structure, so the check still holds
    }

    /** Checks, changing nothing, that {@link #unload()} would go through for every adapter and frozen variable. */
    private void checkUnloadable() {
        requireLoaded();
        for (LoraSameDiff a : adapted.values()) {
            a.checkUnloadable();
        }
        for (String f : frozen) {
            if (!sd.hasVariable(f)) {
                throw new IllegalStateException("cannot unload: variable '" + f + "', which apply froze, is no longer"
                        + " in the graph; nothing was changed");
            }
        }
    }

    /**
     * Whether {@link #unload()} or {@link #mergeAndUnload()} was called.
     *
     * @return {@code true} once unloaded; an unloaded model stays so
     */
    public boolean isUnloaded() {
        return unloaded;
    }

    // ---------------------------------------------------------------- files

    /**
     * Saves the adapters as PEFT files in {@code dir} (F32, atomic; see {@link PeftAdapterFiles#save}): tensor
     * keys {@code base_model.model.<module>.lora_A.weight} / {@code .lora_B.weight}, module names from the weight
     * names ({@link LoraSameDiff#name()}). Works merged or not; the graph is not changed.
     *
     * @param dir the target directory, created if absent; not {@code null}
     * @throws IllegalArgumentException as {@link PeftAdapterFiles#save}, e.g. a non-finite A or B
     * @throws IOException              if writing fails; existing files are then left as they were
     * @throws IllegalStateException    after unload
     * @throws NullPointerException     if {@code dir} is {@code null}
     */
    public void save(Path dir) throws IOException {
        Objects.requireNonNull(dir, "dir must not be null");
        requireLoaded();
        List<AdapterTensors> modules = new ArrayList<>();
        for (LoraSameDiff a : adapted.values()) {
            modules.add(new AdapterTensors(a.name(), a.currentA(), a.currentB(),
                    a.config().useDora() ? a.currentMagnitude() : null, a.config(), a.layout()));
        }
        PeftAdapterFiles.saver().adapterTensors(LoraLinear.DEFAULT_ADAPTER, modules)
                .save(dir, LoraLinear.DEFAULT_ADAPTER);
    }

    /**
     * Loads the PEFT adapter in {@code dir} into the graph's {@code A} and {@code B} (see
     * {@link PeftAdapterFiles#load}); the file's {@code lora_alpha} and {@code use_rslora} set the graph's
     * scaling, its {@code lora_dropout} the adapters' dropout (adding the dropout ops to adapters applied without, see
     * {@link LoraSameDiff}). The file must name exactly the adapted modules, with this model's rank. All or nothing.
     *
     * @param dir the directory holding the PEFT files; not {@code null}
     * @return the file's configuration
     * @throws IllegalArgumentException if the modules or the rank differ, the file is DoRA and the graph's adapters
     *                                  are not or the other way round, the file is DoRA with dropout, the names the
     *                                  file's dropout needs are taken, or as {@link PeftAdapterFiles#load}
     * @throws IllegalStateException    while merged or after unload
     * @throws io.github.lora4j.io.AdapterFormatException for a corrupt or unsupported file
     * @throws IOException              if reading fails
     * @throws NullPointerException     if {@code dir} is {@code null}
     */
    public PeftAdapterConfig load(Path dir) throws IOException {
        Objects.requireNonNull(dir, "dir must not be null");
        requireLoaded();
        for (LoraSameDiff a : adapted.values()) {
            if (a.isMerged()) {
                throw new IllegalStateException("cannot load an adapter while '" + a.weightName()
                        + "' is merged; unmerge() first");
            }
        }
        // Stand-in layers over the graph's W (referenced, never written) are what PeftAdapterFiles.load checks shapes
        // against and loads into; the graph takes the loaded A and B only once every module has passed.
        Map<String, LoraLinear> modules = new LinkedHashMap<>();
        for (LoraSameDiff a : adapted.values()) {
            modules.put(a.name(), LoraLinear.base(a.weightArray(), null, a.layout()));
        }
        PeftAdapterConfig cfg = PeftAdapterFiles.load(dir, modules, LoraLinear.DEFAULT_ADAPTER);
        for (LoraSameDiff a : adapted.values()) {
            if (a.config().useDora() != cfg.useDora()) {
                throw new IllegalArgumentException("the adapter in " + dir + " is " + (cfg.useDora() ? "DoRA" : "plain "
                        + "LoRA") + " (use_dora: " + cfg.useDora() + "), the graph's adapter of '" + a.weightName()
                        + "' is " + (a.config().useDora() ? "DoRA" : "plain LoRA") + "; apply LoRA with useDora = "
                        + cfg.useDora() + " to load it; nothing was loaded");
            }
        }
        List<String> missing = new ArrayList<>();
        for (Map.Entry<String, LoraLinear> e : modules.entrySet()) {
            if (!e.getValue().adapterNames().contains(LoraLinear.DEFAULT_ADAPTER)) {
                missing.add(e.getKey());
            }
        }
        if (!missing.isEmpty()) {
            throw new IllegalArgumentException("the adapter file must cover every adapted module; expected "
                    + modules.keySet() + ", missing " + missing + "; nothing was loaded");
        }
        for (LoraSameDiff a : adapted.values()) {
            int rank = modules.get(a.name()).adapter(LoraLinear.DEFAULT_ADAPTER).config().rank();
            if (rank != a.config().rank()) {
                throw new IllegalArgumentException("the adapter file has r = " + rank + ", the graph's adapters r = "
                        + a.config().rank() + "; apply LoRA with the file's rank; nothing was loaded");
            }
        }
        Map<LoraSameDiff, LoraConfig> configs = new LinkedHashMap<>();
        for (LoraSameDiff a : adapted.values()) {
            LoraConfig c = modules.get(a.name()).adapter(LoraLinear.DEFAULT_ADAPTER).config();
            LoraConfig next = a.config().toBuilder().alpha(c.alpha()).rsLora(c.rsLora()).dropout(c.dropout()).build();
            a.checkConfig(next);
            configs.put(a, next);
        }
        for (LoraSameDiff a : adapted.values()) {
            LoraAdapter loaded = modules.get(a.name()).adapter(LoraLinear.DEFAULT_ADAPTER);
            sd.getArrForVarName(a.loraA().name()).assign(loaded.a());
            sd.getArrForVarName(a.loraB().name()).assign(loaded.b());
            if (loaded.isDora()) {
                sd.getArrForVarName(a.magnitudeVariable().name()).assign(loaded.magnitude());
            }
            a.setConfig(configs.get(a));
        }
        return cfg;
    }

    private void requireLoaded() {
        if (unloaded) {
            throw new IllegalStateException("the adapters were unloaded from the graph");
        }
    }

    @Override
    public String toString() {
        return "LoraSameDiffModel{adapted=" + adapted.keySet() + ", frozen=" + frozen.size() + ", merged="
                + (!unloaded && isMerged()) + ", unloaded=" + unloaded + "}";
    }
}
