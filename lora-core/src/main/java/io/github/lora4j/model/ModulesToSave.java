package io.github.lora4j.model;

import io.github.lora4j.LoraEmbedding;
import io.github.lora4j.LoraLinear;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * PEFT's {@code modules_to_save} in a {@link LoraModel}: checking and installing fully trained copies of modules.
 * The copies' arrays are referenced; the originals are kept untouched beside them.
 */
final class ModulesToSave {

    private ModulesToSave() {
    }

    /** See {@link LoraModel#modulesToSave()}. */
    static List<String> paths(LoraModel model) {
        List<String> out = new ArrayList<>();
        for (String p : model.order) {
            if (model.savedLinears.containsKey(p) || model.savedEmbeddings.containsKey(p)) {
                out.add(p);
            }
        }
        return out;
    }

    /** See {@link LoraModel#setModulesToSaveEnabled}: puts the copies ({@code true}) or the originals in use. */
    static void setEnabled(LoraModel model, boolean enabled) {
        model.modulesToSaveEnabled = enabled;
        model.savedLinears.forEach((p, m) -> model.modules.put(p, m[enabled ? 1 : 0]));
        model.savedEmbeddings.forEach((p, m) -> model.embeddings.put(p, m[enabled ? 1 : 0]));
    }

    /** See {@link LoraModel#unloadModulesToSave()}. */
    static void unload(LoraModel model) {
        setEnabled(model, false);
        model.savedLinears.clear();
        model.savedEmbeddings.clear();
        model.modulesToSaveEnabled = true;
    }

    /** See {@link LoraModel#setModuleToSave}. */
    static void setModuleToSave(LoraModel model, String path, INDArray weight, INDArray bias) {
        Objects.requireNonNull(path, "module path must not be null");
        Objects.requireNonNull(weight, "weight must not be null");
        Map<String, Map<String, long[]>> shapes = new LinkedHashMap<>();
        Map<String, long[]> p = new LinkedHashMap<>();
        p.put("weight", weight.shape());
        if (bias != null) {
            p.put("bias", bias.shape());
        }
        shapes.put(path, p);
        checkFullTensors(model, shapes);
        for (String q : model.order) {
            if (Overlap.overlaps(weight, baseArray(model, q))) {
                throw new IllegalArgumentException("the modules_to_save weight of '" + path + "' shares memory with "
                        + "the weight of module '" + q + "'; expected a new array");
            }
        }
        putSaved(model, path, weight, bias);
    }

    /** The weight (or table, or kernel) of module {@code path}. */
    static INDArray baseArray(LoraModel model, String path) {
        return model.modules.containsKey(path) ? model.modules.get(path).weight() : model.embeddings.containsKey(path)
                ? model.embeddings.get(path).table() : model.convs.get(path).weight();
    }

    /** Installs a checked modules_to_save copy of {@code path}, active while modules_to_save are enabled. */
    static void putSaved(LoraModel model, String path, INDArray weight, INDArray bias) {
        if (model.modules.containsKey(path)) {
            LoraLinear original = model.modules.get(path);
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
            model.savedLinears.put(path, new LoraLinear[] {original, copy});
            if (model.modulesToSaveEnabled) {
                model.modules.put(path, copy);
            }
        } else {
            LoraEmbedding original = model.embeddings.get(path);
            LoraEmbedding copy;
            try {
                copy = LoraEmbedding.base(weight);
            } catch (IllegalArgumentException e) {
                throw new IllegalArgumentException("modules_to_save module '" + path + "': " + e.getMessage(), e);
            }
            if (original.isTraining()) {
                copy.train();
            }
            model.savedEmbeddings.put(path, new LoraEmbedding[] {original, copy});
            if (model.modulesToSaveEnabled) {
                model.embeddings.put(path, copy);
            }
        }
    }

    /** Checks full tensors (module → parameter → shape) against the original modules; nothing is changed. */
    static void checkFullTensors(LoraModel model, Map<String, Map<String, long[]>> full) {
        for (Map.Entry<String, Map<String, long[]>> e : full.entrySet()) {
            String path = e.getKey();
            if (!model.savedLinears.isEmpty() || !model.savedEmbeddings.isEmpty()) {
                throw new IllegalArgumentException("modules_to_save module '" + path + "': the model already has "
                        + "modules_to_save copies of " + model.modulesToSave() + "; unloadModulesToSave() first");
            }
            if (model.targeted.containsKey(path) || model.targetedEmbeddings.containsKey(path)) {
                throw new IllegalArgumentException("modules_to_save module '" + path + "' carries LoRA adapters; "
                        + "a module is either LoRA-adapted or saved in full");
            }
            Map<String, long[]> params = e.getValue();
            if (model.modules.containsKey(path)) {
                LoraLinear m = model.modules.get(path);
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
            } else if (model.embeddings.containsKey(path)) {
                LoraEmbedding m = model.embeddings.get(path);
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
                        + "embedding of the model; available model.modules: " + model.order);
            }
        }
    }
}
