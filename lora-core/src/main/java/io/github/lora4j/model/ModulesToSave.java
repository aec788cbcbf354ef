package io.github.lora4j.model;

import io.github.lora4j.LoraEmbedding;
import io.github.lora4j.LoraLinear;
import io.github.lora4j.LoraModule;
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
        return model.table.withCopies().stream().map(e -> e.path).toList();
    }

    /** See {@link LoraModel#setModulesToSaveEnabled}: puts the copies ({@code true}) or the originals in use. */
    static void setEnabled(LoraModel model, boolean enabled) {
        model.table.copiesEnabled = enabled;
    }

    /** See {@link LoraModel#unloadModulesToSave()}. */
    static void unload(LoraModel model) {
        model.table.withCopies().forEach(e -> e.copy = null);
        model.table.copiesEnabled = true;
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
        for (ModuleEntry q : model.table.computed()) {
            if (Overlap.overlaps(weight, baseArray(model, q.path))) {
                throw new IllegalArgumentException("the modules_to_save weight of '" + path + "' shares memory with "
                        + "the weight of module '" + q.path + "'; expected a new array");
            }
        }
        putSaved(model, path, weight, bias);
    }

    /** The weight (or table, or kernel) of module {@code path} in use. */
    static INDArray baseArray(LoraModel model, String path) {
        return ModuleSet.weightOf(model.table.live(model.table.get(path)));
    }

    /** Installs a checked modules_to_save copy of {@code path}, active while modules_to_save are enabled. */
    static void putSaved(LoraModel model, String path, INDArray weight, INDArray bias) {
        ModuleEntry e = model.table.get(path);
        LoraModule copy;
        try {
            if (e.module instanceof LoraLinear original) {
                INDArray b = bias != null ? bias : original.bias() == null ? null : original.bias().dup('c');
                LoraLinear c = LoraLinear.base(weight, b, original.layout());
                copy = original.isTraining() ? c.train() : c;
            } else {
                LoraEmbedding c = LoraEmbedding.base(weight);
                copy = ((LoraEmbedding) e.module).isTraining() ? c.train() : c;
            }
        } catch (IllegalArgumentException ex) {
            throw new IllegalArgumentException("modules_to_save module '" + path + "': " + ex.getMessage(), ex);
        }
        e.copy = copy;
    }

    /** Checks full tensors (module → parameter → shape) against the original modules; nothing is changed. */
    static void checkFullTensors(LoraModel model, Map<String, Map<String, long[]>> full) {
        for (Map.Entry<String, Map<String, long[]>> e : full.entrySet()) {
            String path = e.getKey();
            if (!model.table.withCopies().isEmpty()) {
                throw new IllegalArgumentException("modules_to_save module '" + path + "': the model already has "
                        + "modules_to_save copies of " + model.modulesToSave() + "; unloadModulesToSave() first");
            }
            ModuleEntry entry = model.table.get(path);
            if (entry != null && entry.targeted) {
                throw new IllegalArgumentException("modules_to_save module '" + path + "' carries LoRA adapters; "
                        + "a module is either LoRA-adapted or saved in full");
            }
            Map<String, long[]> params = e.getValue();
            if (entry != null && entry.module instanceof LoraLinear m) {
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
            } else if (entry != null && entry.module instanceof LoraEmbedding m) {
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
                        + "embedding of the model; available model.modules: " + model.table.paths());
            }
        }
    }
}
