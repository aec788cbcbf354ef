package io.github.lora4j.model;

import io.github.lora4j.AllOrNothing;
import io.github.lora4j.LoraAdapter;
import io.github.lora4j.LoraConfig;
import io.github.lora4j.LoraConv2d;
import io.github.lora4j.LoraEmbedding;
import io.github.lora4j.LoraLinear;
import io.github.lora4j.LoraModule;
import io.github.lora4j.MergeMode;
import io.github.lora4j.TargetModules;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.function.Predicate;
import java.util.regex.Pattern;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * The model-wide adapter operations of {@link LoraModel}: each checks every module before it changes one, or undoes
 * exactly what it did, so a refusal leaves the model as it was.
 */
final class ModelAdapters {

    private ModelAdapters() {
    }

    // ---------------------------------------------------------------- applying and switching

    /** See {@link LoraModel#applyLora(LoraConfig, List)}. */
    static void applyByNames(LoraModel model, LoraConfig config, List<String> targetNames) {
        Objects.requireNonNull(config, "config must not be null");
        Objects.requireNonNull(targetNames, "targetNames must not be null");
        for (String t : targetNames) {
            if (t == null || t.isBlank()) {
                throw new IllegalArgumentException("target module names must not be blank, got " + targetNames);
            }
        }
        List<String> names = List.copyOf(targetNames);
        apply(model, config, path -> matchesName(path, names), "target modules " + names);
        model.targetModules.addAll(names);
    }

    /** See {@link LoraModel#applyLora(LoraConfig, Pattern)}. */
    static void applyByRegex(LoraModel model, LoraConfig config, Pattern regex) {
        Objects.requireNonNull(config, "config must not be null");
        Objects.requireNonNull(regex, "regex must not be null");
        apply(model, config, path -> TargetModules.regexMatches(path, regex), "target regex '" + regex.pattern() + "'");
        model.targetRegex = regex.pattern();
    }

    /** PEFT's rule for a list of names: {@link TargetModules#anyNameMatches(String, java.util.Collection)}. */
    static boolean matchesName(String path, List<String> names) {
        return TargetModules.anyNameMatches(path, names);
    }

    private static void apply(LoraModel model, LoraConfig config, Predicate<String> matches, String what) {
        if (!TargetedModule.none(model)) {
            throw new IllegalStateException("LoRA is already applied to " + TargetedModule.paths(model)
                    + "; use addAdapter(name, config) to add another adapter");
        }
        Map<String, LoraLinear> matched = new LinkedHashMap<>();
        Map<String, LoraEmbedding> matchedEmb = new LinkedHashMap<>();
        Map<String, LoraConv2d> matchedConv = new LinkedHashMap<>();
        for (String path : model.order) {
            if (matches.test(path)) {
                if (model.savedLinears.containsKey(path) || model.savedEmbeddings.containsKey(path)) {
                    throw new IllegalArgumentException(what + " matched module '" + path + "', which is a "
                            + "modules_to_save copy; a module is either LoRA-adapted or saved in full");
                }
                if (model.modules.containsKey(path)) {
                    matched.put(path, model.modules.get(path));
                } else if (model.embeddings.containsKey(path)) {
                    matchedEmb.put(path, model.embeddings.get(path));
                } else {
                    matchedConv.put(path, model.convs.get(path));
                }
            }
        }
        if (matched.isEmpty() && matchedEmb.isEmpty() && matchedConv.isEmpty()) {
            throw new IllegalArgumentException(what + " matched no module; available model.modules: " + model.order);
        }
        addToAll(matched, matchedEmb, matchedConv, LoraModel.DEFAULT_ADAPTER, config);
        for (LoraLinear m : matched.values()) {
            m.setActiveAdapter(LoraModel.DEFAULT_ADAPTER);
        }
        for (LoraEmbedding m : matchedEmb.values()) {
            m.setActiveAdapter(LoraModel.DEFAULT_ADAPTER);
        }
        for (LoraConv2d m : matchedConv.values()) {
            m.setActiveAdapter(LoraModel.DEFAULT_ADAPTER);
        }
        model.targeted.putAll(matched);
        model.targetedEmbeddings.putAll(matchedEmb);
        model.targetedConvs.putAll(matchedConv);
        model.appliedConfig = config;
    }

    /** See {@link LoraModel#addAdapter}. */
    static void addAdapter(LoraModel model, String name, LoraConfig config) {
        Objects.requireNonNull(config, "config must not be null");
        TargetedModule.requireApplied(model);
        addToAll(model.targeted, model.targetedEmbeddings, model.targetedConvs, name, config);
    }

    static void addToAll(Map<String, LoraLinear> target, Map<String, LoraEmbedding> targetEmb,
                                 Map<String, LoraConv2d> targetConv, String name, LoraConfig config) {
        // Any rank >= 1 fits every module (LoraConfig holds no other); only a taken name can clash.
        target.forEach((path, layer) -> checkAddable(path, layer.adapterNames(), name));
        targetEmb.forEach((path, layer) -> checkAddable(path, layer.adapterNames(), name));
        targetConv.forEach((path, layer) -> checkAddable(path, layer.adapterNames(), name));
        if (config.useDora() && (!targetEmb.isEmpty() || !targetConv.isEmpty())) {
            throw new IllegalArgumentException("DoRA (useDora = true) is supported on linear modules only; the targets "
                    + "include embeddings " + targetEmb.keySet() + " and conv2d modules " + targetConv.keySet()
                    + "; target linear modules only, or use plain LoRA");
        }
        // Checked above, so only a blank or reserved name can fail here (on the first module); undone anyway.
        List<Map.Entry<String, LoraModule>> modules = new ArrayList<>();
        modules.addAll(target.entrySet().stream().map(e -> Map.entry(e.getKey(), (LoraModule) e.getValue())).toList());
        modules.addAll(targetEmb.entrySet().stream().map(e -> Map.entry(e.getKey(), (LoraModule) e.getValue())).toList());
        modules.addAll(targetConv.entrySet().stream().map(e -> Map.entry(e.getKey(), (LoraModule) e.getValue())).toList());
        AllOrNothing.run(modules, e -> e.getValue().addAdapter(name, config.forModule(e.getKey())),
                e -> e.getValue().deleteAdapter(name), Map.Entry::getKey, "adding adapter '" + name + "' to",
                "deleting it from", "with the adapter");
    }

    private static void checkAddable(String path, List<String> names, String name) {
        if (names.contains(name)) {
            throw new IllegalArgumentException("adapter '" + name + "' already exists on module '" + path
                    + "'; known adapters: " + names);
        }
    }

    static void setActiveAdapter(LoraModel model, String name) {
        Objects.requireNonNull(name, "adapter name must not be null");
        TargetedModule.requireApplied(model);
        for (Map.Entry<String, LoraLinear> e : model.targeted.entrySet()) {
            checkSwitchable(e.getKey(), e.getValue().adapterNames(), e.getValue().isMerged(), name);
        }
        for (Map.Entry<String, LoraEmbedding> e : model.targetedEmbeddings.entrySet()) {
            checkSwitchable(e.getKey(), e.getValue().adapterNames(), e.getValue().isMerged(), name);
        }
        for (Map.Entry<String, LoraConv2d> e : model.targetedConvs.entrySet()) {
            checkSwitchable(e.getKey(), e.getValue().adapterNames(), e.getValue().isMerged(), name);
        }
        model.targeted.values().forEach(m -> m.setActiveAdapter(name));
        model.targetedEmbeddings.values().forEach(m -> m.setActiveAdapter(name));
        model.targetedConvs.values().forEach(m -> m.setActiveAdapter(name));
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

    static void setTraining(LoraModel model, boolean on) {
        // Modules swapped out (originals or modules_to_save copies) follow, so a swap keeps the mode.
        List<Object> all = new ArrayList<>(model.modules.values());
        all.addAll(model.embeddings.values());
        model.savedLinears.values().forEach(m -> all.addAll(List.of(m)));
        model.savedEmbeddings.values().forEach(m -> all.addAll(List.of(m)));
        for (Object m : all) {
            if (m instanceof LoraLinear l) {
                if (on) {
                    l.train();
                } else {
                    l.eval();
                }
            } else if (m instanceof LoraEmbedding e) {
                if (on) {
                    e.train();
                } else {
                    e.eval();
                }
            }
        }
    }

    // ---------------------------------------------------------------- merge

    static void merge(LoraModel model, MergeMode mode) {
        Objects.requireNonNull(mode, "mode must not be null");
        TargetedModule.requireApplied(model);
        List<TargetedModule> all = TargetedModule.all(model);
        for (TargetedModule m : all) {
            if (m.isMerged()) {
                throw new IllegalStateException("module '" + m.path() + "' is already merged; unmerge() first");
            }
        }
        AllOrNothing.run(all, m -> m.merge(mode), TargetedModule::unmerge, TargetedModule::path, "merging module",
                "unmerging", "merged", (m, done, ex) -> new IllegalStateException("merging module '" + m.path()
                        + "' failed, " + done + " module(s) already merged were unmerged again: " + ex.getMessage(),
                        ex));
    }

    static void unmerge(LoraModel model) {
        TargetedModule.requireApplied(model);
        List<TargetedModule> all = TargetedModule.all(model);
        for (TargetedModule m : all) {
            if (!m.isMerged()) {
                throw new IllegalStateException("module '" + m.path() + "' is not merged; nothing to unmerge");
            }
        }
        all.forEach(TargetedModule::unmerge);
    }

    /** Module path → a new array holding its plain weight; the model is untouched. */
    static Map<String, INDArray> mergedWeightsCopy(LoraModel model) {
        Map<String, INDArray> out = new LinkedHashMap<>();
        for (String p : model.order) {
            out.put(p, model.modules.containsKey(p) ? model.modules.get(p).mergedWeight()
                    : model.embeddings.containsKey(p) ? model.embeddings.get(p).mergedTable()
                    : model.convs.get(p).mergedWeight());
        }
        return out;
    }

    /**
     * Merges (all or nothing) unless every targeted module is merged already, then replaces each targeted module by
     * a plain one over the same arrays and keeps the modules_to_save module in use: nothing is copied.
     */
    static Map<String, INDArray> mergeAndUnload(LoraModel model) {
        List<TargetedModule> all = TargetedModule.all(model);
        if (!all.isEmpty() && !all.stream().allMatch(TargetedModule::isMerged)) {
            merge(model, MergeMode.EXACT);
        }
        // Merged and checked finite: rebuilding plain modules over the same arrays cannot fail from here on. Each
        // dropped wrapper unloads too (it keeps the update, forgets the merge and its adapters), so that it gives
        // W's memory back and can never unmerge out of the plain model's weights.
        for (TargetedModule m : all) {
            if (m.linear() != null) {
                LoraLinear l = m.linear();
                l.mergeAndUnload();
                LoraLinear plain = LoraLinear.base(l.weight(), l.bias(), l.layout());
                model.modules.put(m.path(), l.isTraining() ? plain.train() : plain);
            } else if (m.embedding() != null) {
                m.embedding().mergeAndUnload();
                LoraEmbedding plain = LoraEmbedding.base(m.embedding().table());
                model.embeddings.put(m.path(), m.embedding().isTraining() ? plain.train() : plain);
            } else {
                LoraConv2d c = m.conv();
                c.mergeAndUnload();
                model.convs.put(m.path(), LoraConv2d.base(c.weight(), c.bias() == null ? null
                        : c.bias().reshape(c.outChannels()), c.stride(), c.padding()));
            }
        }
        model.targeted.clear();
        model.targetedEmbeddings.clear();
        model.targetedConvs.clear();
        model.savedLinears.clear();
        model.savedEmbeddings.clear();
        model.modulesToSaveEnabled = true;
        model.targetModules.clear();
        model.targetRegex = null;
        model.appliedConfig = null;
        Map<String, INDArray> out = new LinkedHashMap<>();
        for (String p : model.order) {
            out.put(p, ModulesToSave.baseArray(model, p));
        }
        return out;
    }

    // ---------------------------------------------------------------- adapters

    static void deleteAdapter(LoraModel model, String name) {
        Objects.requireNonNull(name, "adapter name must not be null");
        TargetedModule.requireApplied(model);
        List<TargetedModule> all = TargetedModule.all(model);
        for (TargetedModule m : all) {
            requireKnownUnmerged(m, name, "deleting");
        }
        all.forEach(m -> m.deleteAdapter(name));
    }

    private static void requireKnownUnmerged(TargetedModule m, String name, String action) {
        if (!m.adapterNames().contains(name)) {
            throw new IllegalArgumentException("unknown adapter '" + name + "' on module '" + m.path()
                    + "'; known adapters: " + m.adapterNames());
        }
        if (m.hasMerged(name)) {
            throw new IllegalStateException(action + " adapter '" + name + "' is refused while it is merged into module '"
                    + m.path() + "'; unmerge() first");
        }
    }

    static void setAdaptersEnabled(LoraModel model, boolean on) {
        List<TargetedModule> all = TargetedModule.all(model);
        if (!on) {
            for (TargetedModule m : all) {
                if (m.isMerged()) {
                    throw new IllegalStateException("cannot disable adapters while module '" + m.path()
                            + "' is merged (its update is inside W); unmerge() first");
                }
            }
        }
        all.forEach(m -> m.setAdaptersEnabled(on));
        ModulesToSave.setEnabled(model, on);
    }

    static boolean adaptersEnabled(LoraModel model) {
        return TargetedModule.all(model).stream().allMatch(TargetedModule::adaptersEnabled)
                && (ModulesToSave.paths(model).isEmpty() || model.modulesToSaveEnabled);
    }

    /** See {@link LoraModel#adaptersDisabled()}. */
    static AdaptersDisabled adaptersDisabled(LoraModel model) {
        Runnable restore = enabledState(model);
        setAdaptersEnabled(model, false);
        return new AdaptersDisabled(restore);
    }

    /** Each targeted module's enabled flag and the modules_to_save switch, to put back later. */
    static Runnable enabledState(LoraModel model) {
        Map<TargetedModule, Boolean> was = new LinkedHashMap<>();
        TargetedModule.all(model).forEach(m -> was.put(m, m.adaptersEnabled()));
        boolean saveWas = model.modulesToSaveEnabled;
        return () -> {
            was.forEach((m, on) -> {
                if (on) {
                    m.setAdaptersEnabled(true);
                }
            });
            ModulesToSave.setEnabled(model, saveWas);
        };
    }

    static void setAdapterScale(LoraModel model, String name, double scale) {
        Objects.requireNonNull(name, "adapter name must not be null");
        TargetedModule.requireApplied(model);
        List<TargetedModule> all = TargetedModule.all(model);
        // Every check before any change: setting a scale drops that module's pending training forward, so a refusal
        // found half-way (and rolled back) would still have dropped the forwards of the modules before it.
        for (TargetedModule m : all) {
            requireKnownUnmerged(m, name, "changing the scale of");
            LoraAdapter adapter = m.adapter(name);
            try {
                adapter.config().scaling(scale, adapter.a().dataType());
            } catch (IllegalArgumentException ex) {
                throw new IllegalArgumentException("module '" + m.path() + "' (" + m.kind() + "): scale of adapter '"
                        + name + "': " + ex.getMessage() + "; no module's scale was changed", ex);
            }
        }
        for (TargetedModule m : all) {
            m.setAdapterScale(name, scale);          // checked above with the layers' own rule: cannot fail
        }
    }

    /** {@code rank} null: PEFT's "cat" combination; otherwise "svd" at that rank. */
    static void addWeightedAdapter(LoraModel model, String newName, List<String> adapterNames, double[] weights,
                                   Integer rank) {
        Objects.requireNonNull(newName, "newName must not be null");
        TargetedModule.requireApplied(model);
        if (!model.targetedEmbeddings.isEmpty() || !model.targetedConvs.isEmpty()) {
            throw new IllegalArgumentException("weighted adapter combinations cover linear modules only; expected a "
                    + "model whose LoRA modules are all linear, got LoRA embeddings " + model.targetedEmbeddings.keySet()
                    + " and conv2d modules " + model.targetedConvs.keySet());
        }
        for (Map.Entry<String, LoraLinear> e : model.targeted.entrySet()) {
            if (e.getValue().adapterNames().contains(newName)) {
                throw new IllegalArgumentException("adapter '" + newName + "' already exists on module '" + e.getKey()
                        + "'; known adapters: " + e.getValue().adapterNames());
            }
        }
        AllOrNothing.run(List.copyOf(model.targeted.entrySet()), e -> {
            if (rank == null) {
                e.getValue().addWeightedAdapter(newName, adapterNames, weights);
            } else {
                e.getValue().addWeightedAdapterSvd(newName, adapterNames, weights, rank);
            }
        }, e -> e.getValue().deleteAdapter(newName), Map.Entry::getKey, "adding weighted adapter '" + newName
                + "' to", "deleting it from", "with the adapter", (e, done, ex) -> new IllegalArgumentException(
                "module '" + e.getKey() + "': " + ex.getMessage() + "; adapter '" + newName
                        + "' was added to no module", ex));
    }

    // ---------------------------------------------------------------- mixed batches

    /** See {@link LoraModel#forward(String, INDArray)}. */
    static INDArray forward(LoraModel model, String path, INDArray x) {
        Objects.requireNonNull(path, "module path must not be null");
        LoraEmbedding e = model.embeddings.get(path);
        if (e != null) {
            return e.forward(x);
        }
        LoraConv2d c = model.convs.get(path);
        return c != null ? c.forward(x) : model.module(path).forward(x);
    }

    static INDArray forward(LoraModel model, String path, INDArray x, String[] adapterPerRow) {
        Objects.requireNonNull(path, "module path must not be null");
        Objects.requireNonNull(x, "input must not be null");
        Objects.requireNonNull(adapterPerRow, "adapterPerRow must not be null");
        if (model.embeddings.containsKey(path) || model.convs.containsKey(path)) {
            throw new IllegalArgumentException("mixed-adapter batches are for linear modules; module '" + path
                    + "' is " + (model.embeddings.containsKey(path) ? "an embedding" : "a conv2d module")
                    + ": call forward(path, x) once per adapter instead");
        }
        LoraLinear layer = model.module(path);
        if (model.targeted.containsKey(path)) {
            return layer.forward(x, adapterPerRow);
        }
        // Not LoRA-adapted: PEFT computes the plain module for every row, or for modules_to_save the original
        // module for base rows and the trained copy for the others.
        long rows = 1;
        for (int d = 0; d < x.rank() - 1; d++) {
            rows *= x.size(d);
        }
        List<String> known = model.adapterNames();
        boolean anyBase = false;
        boolean anyAdapter = false;
        if (x.rank() < 1 || adapterPerRow.length != rows) {
            throw new IllegalArgumentException("adapterPerRow: expected one name per row, " + rows + " rows, got "
                    + adapterPerRow.length + " names");
        }
        for (int i = 0; i < adapterPerRow.length; i++) {
            String n = adapterPerRow[i];
            boolean base = n == null || n.equals(LoraLinear.BASE_MODEL);
            if (!base && !known.contains(n)) {
                throw new IllegalArgumentException("adapterPerRow[" + i + "]: unknown adapter '" + n
                        + "'; known adapters: " + known + " (or null / " + LoraLinear.BASE_MODEL + ")");
            }
            anyBase |= base;
            anyAdapter |= !base;
        }
        LoraLinear[] saved = model.savedLinears.get(path);
        if (saved == null || !model.modulesToSaveEnabled || !anyBase) {
            return layer.forward(x);
        }
        if (!anyAdapter) {
            return saved[0].forward(x);
        }
        if (layer.isTraining()) {
            // The rows would need two modules' backward passes; one module keeps one forward.
            throw new IllegalStateException("module '" + path + "' is a modules_to_save copy: a training batch must "
                    + "use it (adapter rows) or its original (base rows) for every row, got both; call eval() for "
                    + "inference, or split the batch");
        }
        INDArray y = saved[1].forward(x);
        INDArray yBase = saved[0].forward(x);
        INDArray y2 = y.reshape('c', rows, layer.outFeatures());
        INDArray b2 = yBase.reshape('c', rows, layer.outFeatures());
        for (int i = 0; i < adapterPerRow.length; i++) {
            if (adapterPerRow[i] == null || adapterPerRow[i].equals(LoraLinear.BASE_MODEL)) {
                y2.putRow(i, b2.getRow(i));
            }
        }
        return y;
    }
}
