package io.github.lora4j.model;

import io.github.lora4j.LoraConv2d;
import io.github.lora4j.LoraEmbedding;
import io.github.lora4j.LoraLinear;
import io.github.lora4j.io.PeftAdapter;
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
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;

/** {@link LoraModel#save} and {@link LoraModel#load}: PEFT adapter files of the whole model. */
final class ModelFiles {

    private ModelFiles() {
    }

    /** See {@link LoraModel#save(Path, String)}. */
    static void save(LoraModel model, Path dir, String adapterName) throws IOException {
        PeftAdapterFiles.Saver saver = saver(model);
        if (model.appliedConfig != null) {
            saver.provenance(model.appliedConfig);
        }
        saver.save(dir, adapterName);
    }

    /** See {@link LoraModel#save(Path)}. */
    static void saveAll(LoraModel model, Path dir) throws IOException {
        PeftAdapterFiles.Saver saver = saver(model);
        List<String> names = model.adapterNames();
        if (names.size() > 1 && !(model.savedLinears.isEmpty() && model.savedEmbeddings.isEmpty())) {
            throw new IllegalArgumentException("the model has modules_to_save copies " + model.modulesToSave()
                    + " and adapters " + names + ": lora4j keeps one copy for all adapters, PEFT one per adapter, so "
                    + "a folder of several adapters would give PEFT another model; save one adapter with save(dir, "
                    + "name); nothing was written");
        }
        if (model.appliedConfig != null && names.size() == 1) {
            saver.provenance(model.appliedConfig);   // else each adapter's own config, from its first module
        }
        saver.saveAll(dir, names);
    }

    /** A saver of every targeted module, the modules_to_save copies, targets, base model name and task type. */
    private static PeftAdapterFiles.Saver saver(LoraModel model) {
        TargetedModule.requireApplied(model);
        Map<String, Map<String, INDArray>> full = new LinkedHashMap<>();
        model.savedLinears.forEach((p, m) -> {
            Map<String, INDArray> t = new LinkedHashMap<>();
            t.put("weight", m[1].weight());
            if (m[1].bias() != null) {
                t.put("bias", m[1].bias().reshape(m[1].outFeatures()));
            }
            full.put(p, t);
        });
        model.savedEmbeddings.forEach((p, m) -> full.put(p, Map.of("weight", m[1].table())));
        PeftAdapterFiles.Saver saver = PeftAdapterFiles.saver().linears(model.loraModules()).embeddings(model.loraEmbeddings())
                .convs(model.loraConvs())
                .modulesToSave(full).baseModelNameOrPath(model.baseModelNameOrPath).taskType(model.taskType);
        if (model.targetRegex != null) {
            saver.targetModulesRegex(model.targetRegex);
        } else if (!model.targetModules.isEmpty()) {
            saver.targetModules(model.targetModules);
        }
        return saver;
    }

    /** See {@link LoraModel#load(Path)}. */
    static List<String> loadAll(LoraModel model, Path dir) throws IOException {
        Map<String, Path> found = PeftAdapterFiles.adapterFolders(dir);
        if (found.isEmpty()) {
            throw new IllegalArgumentException(dir + ": expected " + PeftAdapterFiles.CONFIG_FILE + " at the top (adapter '"
                    + LoraModel.DEFAULT_ADAPTER + "') or in subfolders named after their adapters, found none");
        }
        List<String> names = new ArrayList<>(found.keySet());
        List<String> taken = new ArrayList<>(names);
        taken.retainAll(model.adapterNames());
        if (!taken.isEmpty()) {
            throw new IllegalArgumentException(dir + " holds adapters " + names + ", but the model already has "
                    + taken + "; nothing was loaded");
        }
        // Every folder read and checked before the model changes (the model's own checks follow in load).
        for (Map.Entry<String, Path> e : found.entrySet()) {
            PeftAdapter a = PeftAdapterFiles.read(e.getValue());
            if (names.size() > 1 && !a.fullModules().isEmpty()) {
                throw new IllegalArgumentException(e.getValue() + ": adapter '" + e.getKey() + "' carries modules_to_save "
                        + a.fullModules() + "; lora4j keeps one copy for all adapters, PEFT one per adapter: load it "
                        + "alone with load(dir, name); nothing was loaded");
            }
        }
        boolean fresh = TargetedModule.none(model);
        String baseModel = model.baseModelNameOrPath;
        String taskType = model.taskType;
        List<String> loaded = new ArrayList<>();
        try {
            for (String name : names) {
                load(model, found.get(name), name);
                loaded.add(name);
            }
        } catch (IOException | RuntimeException e) {
            // Back to the model before this call: the adapters loaded so far go, and a fresh model is fresh again.
            for (TargetedModule m : TargetedModule.all(model)) {
                for (String name : loaded) {
                    m.deleteAdapter(name);
                }
            }
            if (fresh) {
                model.targeted.clear();
                model.targetedEmbeddings.clear();
                model.targetedConvs.clear();
                model.targetModules.clear();
                model.targetRegex = null;
            }
            model.baseModelNameOrPath = baseModel;
            model.taskType = taskType;
            throw e;
        }
        return loaded;
    }

    /** See {@link LoraModel#load}. */
    static PeftAdapterConfig load(LoraModel model, Path dir, String adapterName) throws IOException {
        Objects.requireNonNull(adapterName, "adapterName must not be null");
        boolean fresh = TargetedModule.none(model);
        Map<String, LoraLinear> linearTargets = fresh ? withoutSaved(model.modules, model.savedLinears) : model.loraModules();
        Map<String, LoraEmbedding> embTargets = fresh ? withoutSaved(model.embeddings, model.savedEmbeddings) : model.loraEmbeddings();
        Map<String, LoraConv2d> convTargets = fresh ? Collections.unmodifiableMap(model.convs) : model.loraConvs();
        PeftAdapter adapter = PeftAdapterFiles.load(dir, linearTargets, embTargets, convTargets, adapterName,
                layout -> ModulesToSave.checkFullTensors(model, layout.fullTensors()));
        List<String> added = new ArrayList<>();
        for (String module : adapter.modules()) {
            added.add(module);
        }
        Runnable undo = () -> {
            for (String m : added) {
                if (model.modules.containsKey(m)) {
                    model.modules.get(m).deleteAdapter(adapterName);
                } else if (model.embeddings.containsKey(m)) {
                    model.embeddings.get(m).deleteAdapter(adapterName);
                } else {
                    model.convs.get(m).deleteAdapter(adapterName);
                }
            }
        };
        if (!fresh) {
            List<String> missing = new ArrayList<>();
            for (String p : TargetedModule.paths(model)) {
                if (!added.contains(p)) {
                    missing.add(p);
                }
            }
            if (!missing.isEmpty()) {
                undo.run();
                throw new IllegalArgumentException("the adapter file must cover every targeted module; expected "
                        + TargetedModule.paths(model) + ", missing " + missing + "; nothing was loaded");
            }
        }
        Map<String, INDArray[]> copies = new LinkedHashMap<>();
        try {
            for (String path : adapter.fullModules()) {
                Map<String, INDArray> t = adapter.full(path);
                DataType type = model.modules.containsKey(path) ? model.modules.get(path).dataType() : model.embeddings.get(path).dataType();
                INDArray w = t.containsKey("weight") ? adapter.full(path, "weight", type) : ModulesToSave.baseArray(model, path).dup('c');
                INDArray b = t.containsKey("bias") ? adapter.full(path, "bias", type) : null;
                copies.put(path, new INDArray[] {w, b});
            }
        } catch (IOException | RuntimeException e) {
            undo.run();
            throw e;
        }
        copies.forEach((path, wb) -> ModulesToSave.putSaved(model, path, wb[0], wb[1]));
        PeftAdapterConfig cfg = adapter.config();
        if (fresh) {
            for (String m : added) {
                if (model.modules.containsKey(m)) {
                    model.modules.get(m).setActiveAdapter(adapterName);
                    model.targeted.put(m, model.modules.get(m));
                } else if (model.embeddings.containsKey(m)) {
                    model.embeddings.get(m).setActiveAdapter(adapterName);
                    model.targetedEmbeddings.put(m, model.embeddings.get(m));
                } else {
                    model.convs.get(m).setActiveAdapter(adapterName);
                    model.targetedConvs.put(m, model.convs.get(m));
                }
            }
            reorderTargets(model);
            if (cfg.targetModulesRegex().isPresent()) {
                model.targetRegex = cfg.targetModulesRegex().get();
            } else {
                model.targetModules.addAll(cfg.targetModules());
            }
            model.baseModelNameOrPath = cfg.baseModelNameOrPath().orElse(model.baseModelNameOrPath);
            model.taskType = cfg.taskType().orElse(model.taskType);
        }
        return cfg;
    }

    private static <T> Map<String, T> withoutSaved(Map<String, T> all, Map<String, ?> saved) {
        Map<String, T> out = new LinkedHashMap<>(all);
        out.keySet().removeAll(saved.keySet());
        return Collections.unmodifiableMap(out);
    }

    /** Keeps the targeted maps in model order whatever order the file listed the modules in. */
    private static void reorderTargets(LoraModel model) {
        Map<String, LoraLinear> t = new LinkedHashMap<>();
        Map<String, LoraEmbedding> te = new LinkedHashMap<>();
        Map<String, LoraConv2d> tc = new LinkedHashMap<>();
        for (String p : model.order) {
            if (model.targetedConvs.containsKey(p)) {
                tc.put(p, model.targetedConvs.get(p));
            }
            if (model.targeted.containsKey(p)) {
                t.put(p, model.targeted.get(p));
            }
            if (model.targetedEmbeddings.containsKey(p)) {
                te.put(p, model.targetedEmbeddings.get(p));
            }
        }
        model.targeted.clear();
        model.targeted.putAll(t);
        model.targetedEmbeddings.clear();
        model.targetedEmbeddings.putAll(te);
        model.targetedConvs.clear();
        model.targetedConvs.putAll(tc);
    }
}
