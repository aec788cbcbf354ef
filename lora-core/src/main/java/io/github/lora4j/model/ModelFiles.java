package io.github.lora4j.model;

import io.github.lora4j.LoraConv2d;
import io.github.lora4j.LoraEmbedding;
import io.github.lora4j.AllOrNothing;
import io.github.lora4j.LoraLinear;
import io.github.lora4j.LoraModule;
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
        if (names.size() > 1 && !model.table.withCopies().isEmpty()) {
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
        model.table.requireApplied();
        Map<String, Map<String, INDArray>> full = new LinkedHashMap<>();
        for (ModuleEntry e : model.table.withCopies()) {
            Map<String, INDArray> t = new LinkedHashMap<>();
            t.put("weight", ModuleSet.weightOf(e.copy));
            if (e.copy instanceof LoraLinear l && l.bias() != null) {
                t.put("bias", l.bias().reshape(l.outFeatures()));
            }
            full.put(e.path, t);
        }
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
        boolean fresh = model.table.noneTargeted();
        String baseModel = model.baseModelNameOrPath;
        String taskType = model.taskType;
        try {
            // Each load is all or nothing itself; a later failure deletes the adapters loaded before it.
            AllOrNothing.run(names, name -> {
                try {
                    load(model, found.get(name), name);
                } catch (IOException e) {
                    throw new ReadFailed(e);
                }
            }, name -> model.table.targeted().forEach(e -> e.module.deleteAdapter(name)), name -> name,
                    "loading adapter", "deleting it again", "loaded");
        } catch (RuntimeException e) {
            // Back to the model before this call: a fresh model is fresh again, its names as they were.
            if (fresh) {
                model.table.targeted().forEach(m -> m.targeted = false);
                model.targetModules.clear();
                model.targetRegex = null;
            }
            model.baseModelNameOrPath = baseModel;
            model.taskType = taskType;
            if (e instanceof ReadFailed r) {
                IOException io = r.getCause();
                for (Throwable t : r.getSuppressed()) {
                    io.addSuppressed(t);
                }
                throw io;
            }
            throw e;
        }
        return names;
    }

    /** See {@link LoraModel#load}. */
    static PeftAdapterConfig load(LoraModel model, Path dir, String adapterName) throws IOException {
        Objects.requireNonNull(adapterName, "adapterName must not be null");
        boolean fresh = model.table.noneTargeted();
        // A fresh model takes any module without a modules_to_save copy; otherwise the file must fit the targets.
        Map<String, LoraLinear> linearTargets = fresh ? withoutCopies(model, LoraLinear.class) : model.loraModules();
        Map<String, LoraEmbedding> embTargets = fresh ? withoutCopies(model, LoraEmbedding.class) : model.loraEmbeddings();
        Map<String, LoraConv2d> convTargets = fresh ? withoutCopies(model, LoraConv2d.class) : model.loraConvs();
        PeftAdapter adapter = PeftAdapterFiles.load(dir, linearTargets, embTargets, convTargets, adapterName,
                layout -> ModulesToSave.checkFullTensors(model, layout.fullTensors()));
        List<String> added = new ArrayList<>(adapter.modules());
        // PeftAdapterFiles.load added the adapter to every module (all or nothing there); this undoes the whole of
        // it when a later check of the model's own fails. One call's undo, not a per-module rollback, so it is not
        // AllOrNothing's shape.
        Runnable undo = () -> added.forEach(m -> model.table.get(m).module.deleteAdapter(adapterName));
        if (!fresh) {
            List<String> missing = new ArrayList<>();
            for (String p : model.table.targetedPaths()) {
                if (!added.contains(p)) {
                    missing.add(p);
                }
            }
            if (!missing.isEmpty()) {
                undo.run();
                throw new IllegalArgumentException("the adapter file must cover every targeted module; expected "
                        + model.table.targetedPaths() + ", missing " + missing + "; nothing was loaded");
            }
        }
        Map<String, INDArray[]> copies = new LinkedHashMap<>();
        try {
            for (String path : adapter.fullModules()) {
                Map<String, INDArray> t = adapter.full(path);
                DataType type = model.table.get(path).module.dataType();
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
                ModuleEntry e = model.table.get(m);
                e.module.setActiveAdapter(adapterName);
                e.targeted = true;
            }
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

    /** Path → layer of {@code type} for the modules without a modules_to_save copy, in model order; unmodifiable. */
    private static <T extends LoraModule> Map<String, T> withoutCopies(LoraModel model, Class<T> type) {
        Map<String, T> out = model.table.layers(type, false);
        model.table.withCopies().forEach(e -> out.remove(e.path));
        return Collections.unmodifiableMap(out);
    }

    /** Carries a load's {@link IOException} through {@link AllOrNothing}, whose steps throw unchecked ones only. */
    private static final class ReadFailed extends RuntimeException {
        ReadFailed(IOException cause) {
            super(cause);
        }

        @Override
        public synchronized IOException getCause() {
            return (IOException) super.getCause();
        }
    }
}
