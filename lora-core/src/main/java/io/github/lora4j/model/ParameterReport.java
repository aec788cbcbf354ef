package io.github.lora4j.model;

import io.github.lora4j.LoraConv2d;
import io.github.lora4j.LoraEmbedding;
import io.github.lora4j.LoraLinear;
import java.util.Locale;

/** The parameter counts of {@link LoraModel} and PEFT's {@code print_trainable_parameters} line. */
final class ParameterReport {

    private ParameterReport() {
    }

    static long trainable(LoraModel model) {
        long n = model.targeted.values().stream().mapToLong(LoraLinear::trainableParameterCount).sum()
                + model.targetedEmbeddings.values().stream().mapToLong(LoraEmbedding::trainableParameterCount).sum()
                + model.targetedConvs.values().stream().mapToLong(LoraConv2d::trainableParameterCount).sum();
        if (model.modulesToSaveEnabled) {
            n += model.savedLinears.values().stream().mapToLong(m -> m[1].totalParameterCount()).sum()
                    + model.savedEmbeddings.values().stream().mapToLong(m -> m[1].totalParameterCount()).sum();
        }
        return n;
    }

    static long total(LoraModel model) {
        long n = model.parametersOnly.values().stream().mapToLong(Long::longValue).sum();
        for (String p : model.order) {
            if (model.savedLinears.containsKey(p)) {
                n += model.savedLinears.get(p)[0].totalParameterCount() + model.savedLinears.get(p)[1].totalParameterCount();
            } else if (model.savedEmbeddings.containsKey(p)) {
                n += model.savedEmbeddings.get(p)[0].totalParameterCount()
                        + model.savedEmbeddings.get(p)[1].totalParameterCount();
            } else if (model.modules.containsKey(p)) {
                n += model.modules.get(p).totalParameterCount();
            } else {
                n += model.embeddings.containsKey(p) ? model.embeddings.get(p).totalParameterCount()
                        : model.convs.get(p).totalParameterCount();
            }
        }
        return n;
    }

    static String line(LoraModel model) {
        long trainable = trainable(model);
        long all = total(model);
        return String.format(Locale.ROOT, "trainable params: %,d || all params: %,d || trainable%%: %.4f",
                trainable, all, 100.0 * trainable / all);
    }

    static String scope(LoraModel model) {
        return String.format(Locale.ROOT, "counted: %d linear, %d embedding, %d conv2d modules, %d parameters-only "
                        + "modules, %d modules_to_save copies; layers not registered with LoraModel.builder() are not "
                        + "counted", model.modules.size(), model.embeddings.size(), model.convs.size(),
                model.parametersOnly.size(), model.savedLinears.size() + model.savedEmbeddings.size());
    }

    /** See {@link LoraModel#toString()}. */
    static String describe(LoraModel model) {
        return "LoraModel{modules=" + model.order.size() + ", targeted=" + TargetedModule.paths(model) + ", active="
                + model.activeAdapter() + ", merged=" + model.isMerged() + (model.modulesToSave().isEmpty() ? ""
                : ", modulesToSave=" + model.modulesToSave()) + "}";
    }
}
