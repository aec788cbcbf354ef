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
        if (!model.table.noneTargeted()) {
            throw new IllegalStateException("LoRA is already applied to " + model.table.targetedPaths()
                    + "; use addAdapter(name, config) to add another adapter");
        }
        List<ModuleEntry> matched = new ArrayList<>();
        for (ModuleEntry e : model.table.computed()) {
            if (matches.test(e.path)) {
                if (e.copy != null) {
                    throw new IllegalArgumentException(what + " matched module '" + e.path + "', which is a "
                            + "modules_to_save copy; a module is either LoRA-adapted or saved in full");
                }
                matched.add(e);
            }
        }
        if (matched.isEmpty()) {
            throw new IllegalArgumentException(what + " matched no module; available model.modules: "
                    + model.table.paths());
        }
        addToAll(matched, LoraModel.DEFAULT_ADAPTER, config);
        for (ModuleEntry e : matched) {
            e.module.setActiveAdapter(LoraModel.DEFAULT_ADAPTER);
            e.targeted = true;
        }
        model.appliedConfig = config;
    }

    /** See {@link LoraModel#addAdapter}. */
    static void addAdapter(LoraModel model, String name, LoraConfig config) {
        Objects.requireNonNull(config, "config must not be null");
        model.table.requireApplied();
        addToAll(model.table.targeted(), name, config);
    }

    /** Adds adapter {@code name} to every module of {@code targets}, each with its own seed; all or nothing. */
    static void addToAll(List<ModuleEntry> targets, String name, LoraConfig config) {
        // Any rank >= 1 fits every module (LoraConfig holds no other); only a taken name can clash.
        targets.forEach(e -> checkAddable(e.path, e.module.adapterNames(), name));
        if (config.useDora() && targets.stream().anyMatch(e -> e.kind() != LoraModule.Kind.LINEAR)) {
            throw new IllegalArgumentException("DoRA (useDora = true) is supported on linear modules only; the targets "
                    + "include embeddings " + paths(targets, LoraModule.Kind.EMBEDDING) + " and conv2d modules "
                    + paths(targets, LoraModule.Kind.CONV2D) + "; target linear modules only, or use plain LoRA");
        }
        // Checked above, so only a blank or reserved name can fail here (on the first module); undone anyway.
        AllOrNothing.run(targets, e -> e.module.addAdapter(name, config.forModule(e.path)),
                e -> e.module.deleteAdapter(name), e -> e.path, "adding adapter '" + name + "' to",
                "deleting it from", "with the adapter");
    }

    private static List<String> paths(List<ModuleEntry> entries, LoraModule.Kind kind) {
        return entries.stream().filter(e -> e.kind() == kind).map(e -> e.path).toList();
    }

    private static void checkAddable(String path, List<String> names, String name) {
        if (names.contains(name)) {
            throw new IllegalArgumentException("adapter '" + name + "' already exists on module '" + path
                    + "'; known adapters: " + names);
        }
    }

    static void setActiveAdapter(LoraModel model, String name) {
        Objects.requireNonNull(name, "adapter name must not be null");
        model.table.requireApplied();
        List<ModuleEntry> all = model.table.targeted();
        for (ModuleEntry e : all) {
            checkSwitchable(e.path, e.module.adapterNames(), e.module.isMerged(), name);
        }
        all.forEach(e -> e.module.setActiveAdapter(name));
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
        // Modules swapped out (originals or modules_to_save copies) follow, so a swap keeps the mode. Conv2d
        // modules have no training mode.
        for (LoraModule m : model.table.allLayers()) {
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
        model.table.requireApplied();
        List<ModuleEntry> all = model.table.targeted();
        for (ModuleEntry e : all) {
            if (e.module.isMerged()) {
                throw new IllegalStateException("module '" + e.path + "' is already merged; unmerge() first");
            }
        }
        AllOrNothing.run(all, e -> e.module.merge(mode), e -> e.module.unmerge(), e -> e.path, "merging module",
                "unmerging", "merged", (e, done, ex) -> new IllegalStateException("merging module '" + e.path
                        + "' failed, " + done + " module(s) already merged were unmerged again: " + ex.getMessage(),
                        ex));
    }

    static void unmerge(LoraModel model) {
        model.table.requireApplied();
        List<ModuleEntry> all = model.table.targeted();
        for (ModuleEntry e : all) {
            if (!e.module.isMerged()) {
                throw new IllegalStateException("module '" + e.path + "' is not merged; nothing to unmerge");
            }
        }
        all.forEach(e -> e.module.unmerge());
    }

    /** Module path → a new array holding its plain weight; the model is untouched. */
    static Map<String, INDArray> mergedWeightsCopy(LoraModel model) {
        Map<String, INDArray> out = new LinkedHashMap<>();
        for (ModuleEntry e : model.table.computed()) {
            LoraModule m = model.table.live(e);
            out.put(e.path, switch (m.kind()) {
                case LINEAR -> ((LoraLinear) m).mergedWeight();
                case EMBEDDING -> ((LoraEmbedding) m).mergedTable();
                case CONV2D -> ((LoraConv2d) m).mergedWeight();
            });
        }
        return out;
    }

    /**
     * Merges (all or nothing) unless every targeted module is merged already, then replaces each targeted module by
     * a plain one over the same arrays and keeps the modules_to_save module in use: nothing is copied.
     */
    static Map<String, INDArray> mergeAndUnload(LoraModel model) {
        List<ModuleEntry> all = model.table.targeted();
        if (!all.isEmpty() && !all.stream().allMatch(e -> e.module.isMerged())) {
            merge(model, MergeMode.EXACT);
        }
        // Merged and checked finite: rebuilding plain modules over the same arrays cannot fail from here on. Each
        // dropped wrapper unloads too (it keeps the update, forgets the merge and its adapters), so that it gives
        // W's memory back and can never unmerge out of the plain model's weights.
        for (ModuleEntry e : all) {
            e.module.mergeAndUnload();
            e.module = plain(e.module);
            e.targeted = false;
        }
        // Enabled copies stay in use, the originals go; disabled copies go.
        for (ModuleEntry e : model.table.withCopies()) {
            e.module = model.table.live(e);
            e.copy = null;
        }
        model.table.copiesEnabled = true;
        model.targetModules.clear();
        model.targetRegex = null;
        model.appliedConfig = null;
        Map<String, INDArray> out = new LinkedHashMap<>();
        for (ModuleEntry e : model.table.computed()) {
            out.put(e.path, ModuleSet.weightOf(e.module));
        }
        return out;
    }

    /** A new layer without adapters over {@code m}'s arrays, in {@code m}'s training mode. */
    private static LoraModule plain(LoraModule m) {
        return switch (m.kind()) {
            case LINEAR -> {
                LoraLinear l = (LoraLinear) m;
                LoraLinear p = LoraLinear.base(l.weight(), l.bias(), l.layout());
                yield l.isTraining() ? p.train() : p;
            }
            case EMBEDDING -> {
                LoraEmbedding t = (LoraEmbedding) m;
                LoraEmbedding p = LoraEmbedding.base(t.table());
                yield t.isTraining() ? p.train() : p;
            }
            case CONV2D -> {
                LoraConv2d c = (LoraConv2d) m;
                yield LoraConv2d.base(c.weight(), c.bias() == null ? null : c.bias().reshape(c.outChannels()),
                        c.stride(), c.padding());
            }
        };
    }

    // ---------------------------------------------------------------- adapters

    static void deleteAdapter(LoraModel model, String name) {
        Objects.requireNonNull(name, "adapter name must not be null");
        model.table.requireApplied();
        List<ModuleEntry> all = model.table.targeted();
        for (ModuleEntry e : all) {
            requireKnownUnmerged(e, name, "deleting");
        }
        all.forEach(e -> e.module.deleteAdapter(name));
    }

    private static void requireKnownUnmerged(ModuleEntry e, String name, String action) {
        if (!e.module.adapterNames().contains(name)) {
            throw new IllegalArgumentException("unknown adapter '" + name + "' on module '" + e.path
                    + "'; known adapters: " + e.module.adapterNames());
        }
        if (e.hasMerged(name)) {
            throw new IllegalStateException(action + " adapter '" + name + "' is refused while it is merged into module '"
                    + e.path + "'; unmerge() first");
        }
    }

    static void setAdaptersEnabled(LoraModel model, boolean on) {
        List<ModuleEntry> all = model.table.targeted();
        if (!on) {
            for (ModuleEntry e : all) {
                if (e.module.isMerged()) {
                    throw new IllegalStateException("cannot disable adapters while module '" + e.path
                            + "' is merged (its update is inside W); unmerge() first");
                }
            }
        }
        all.forEach(e -> setEnabled(e.module, on));
        model.table.copiesEnabled = on;
    }

    private static void setEnabled(LoraModule m, boolean on) {
        if (on) {
            m.enableAdapters();
        } else {
            m.disableAdapters();
        }
    }

    static boolean adaptersEnabled(LoraModel model) {
        return model.table.targeted().stream().allMatch(e -> e.module.adaptersEnabled())
                && (model.table.withCopies().isEmpty() || model.table.copiesEnabled);
    }

    /** See {@link LoraModel#adaptersDisabled()}. */
    static AdaptersDisabled adaptersDisabled(LoraModel model) {
        Runnable restore = enabledState(model);
        setAdaptersEnabled(model, false);
        return new AdaptersDisabled(restore);
    }

    /** Each targeted module's enabled flag and the modules_to_save switch, to put back later. */
    static Runnable enabledState(LoraModel model) {
        Map<LoraModule, Boolean> was = new LinkedHashMap<>();
        model.table.targeted().forEach(e -> was.put(e.module, e.module.adaptersEnabled()));
        boolean saveWas = model.table.copiesEnabled;
        return () -> {
            was.forEach((m, on) -> {
                if (on) {
                    m.enableAdapters();
                }
            });
            model.table.copiesEnabled = saveWas;
        };
    }

    static void setAdapterScale(LoraModel model, String name, double scale) {
        Objects.requireNonNull(name, "adapter name must not be null");
        model.table.requireApplied();
        List<ModuleEntry> all = model.table.targeted();
        // Every check before any change: setting a scale drops that module's pending training forward, so a refusal
        // found half-way (and rolled back) would still have dropped the forwards of the modules before it.
        for (ModuleEntry e : all) {
            requireKnownUnmerged(e, name, "changing the scale of");
            LoraAdapter adapter = e.module.adapter(name);
            try {
                adapter.config().scaling(scale, adapter.a().dataType());
            } catch (IllegalArgumentException ex) {
                throw new IllegalArgumentException("module '" + e.path + "' (" + e.kindName() + "): scale of adapter '"
                        + name + "': " + ex.getMessage() + "; no module's scale was changed", ex);
            }
        }
        for (ModuleEntry e : all) {
            e.module.setAdapterScale(name, scale);          // checked above with the layers' own rule: cannot fail
        }
    }

    /** {@code rank} null: PEFT's "cat" combination; otherwise "svd" at that rank. */
    static void addWeightedAdapter(LoraModel model, String newName, List<String> adapterNames, double[] weights,
                                   Integer rank) {
        Objects.requireNonNull(newName, "newName must not be null");
        model.table.requireApplied();
        List<ModuleEntry> all = model.table.targeted();
        if (all.stream().anyMatch(e -> e.kind() != LoraModule.Kind.LINEAR)) {
            throw new IllegalArgumentException("weighted adapter combinations cover linear modules only; expected a "
                    + "model whose LoRA modules are all linear, got LoRA embeddings "
                    + paths(all, LoraModule.Kind.EMBEDDING) + " and conv2d modules " + paths(all, LoraModule.Kind.CONV2D));
        }
        for (ModuleEntry e : all) {
            if (e.module.adapterNames().contains(newName)) {
                throw new IllegalArgumentException("adapter '" + newName + "' already exists on module '" + e.path
                        + "'; known adapters: " + e.module.adapterNames());
            }
        }
        AllOrNothing.run(all, e -> {
            LoraLinear l = (LoraLinear) e.module;
            if (rank == null) {
                l.addWeightedAdapter(newName, adapterNames, weights);
            } else {
                l.addWeightedAdapterSvd(newName, adapterNames, weights, rank);
            }
        }, e -> e.module.deleteAdapter(newName), e -> e.path, "adding weighted adapter '" + newName
                + "' to", "deleting it from", "with the adapter", (e, done, ex) -> new IllegalArgumentException(
                "module '" + e.path + "': " + ex.getMessage() + "; adapter '" + newName
                        + "' was added to no module", ex));
    }

    // ---------------------------------------------------------------- mixed batches

    /** See {@link LoraModel#forward(String, INDArray)}. */
    static INDArray forward(LoraModel model, String path, INDArray x) {
        Objects.requireNonNull(path, "module path must not be null");
        ModuleEntry e = model.table.get(path);
        if (e == null) {
            return model.module(path).forward(x);           // the refusal that lists the modules
        }
        LoraModule m = model.table.live(e);
        return switch (m.kind()) {
            case LINEAR -> ((LoraLinear) m).forward(x);
            case EMBEDDING -> ((LoraEmbedding) m).forward(x);
            case CONV2D -> ((LoraConv2d) m).forward(x);
        };
    }

    static INDArray forward(LoraModel model, String path, INDArray x, String[] adapterPerRow) {
        Objects.requireNonNull(path, "module path must not be null");
        Objects.requireNonNull(x, "input must not be null");
        Objects.requireNonNull(adapterPerRow, "adapterPerRow must not be null");
        ModuleEntry entry = model.table.get(path);
        if (entry != null && entry.kind() != LoraModule.Kind.LINEAR) {
            throw new IllegalArgumentException("mixed-adapter batches are for linear modules; module '" + path
                    + "' is " + (entry.kind() == LoraModule.Kind.EMBEDDING ? "an embedding" : "a conv2d module")
                    + ": call forward(path, x) once per adapter instead");
        }
        LoraLinear layer = model.module(path);
        if (entry.targeted) {
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
        if (entry.copy == null || !model.table.copiesEnabled || !anyBase) {
            return layer.forward(x);
        }
        LoraLinear original = (LoraLinear) entry.module;
        if (!anyAdapter) {
            return original.forward(x);
        }
        if (layer.isTraining()) {
            // The rows would need two modules' backward passes; one module keeps one forward.
            throw new IllegalStateException("module '" + path + "' is a modules_to_save copy: a training batch must "
                    + "use it (adapter rows) or its original (base rows) for every row, got both; call eval() for "
                    + "inference, or split the batch");
        }
        INDArray y = ((LoraLinear) entry.copy).forward(x);
        INDArray yBase = original.forward(x);
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
