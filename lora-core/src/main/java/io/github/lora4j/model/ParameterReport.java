package io.github.lora4j.model;

import io.github.lora4j.LoraModule;
import java.util.Locale;

/** The parameter counts of {@link LoraModel} and PEFT's {@code print_trainable_parameters} line. */
final class ParameterReport {

    private ParameterReport() {
    }

    static long trainable(LoraModel model) {
        long n = model.table.targeted().stream().mapToLong(e -> e.module.trainableParameterCount()).sum();
        if (model.table.copiesEnabled) {
            n += model.table.withCopies().stream().mapToLong(e -> e.copy.totalParameterCount()).sum();
        }
        return n;
    }

    /** Every module's parameters, a modules_to_save copy's beside its original's, and the parameters-only counts. */
    static long total(LoraModel model) {
        long n = model.table.parametersOnlyView().values().stream().mapToLong(Long::longValue).sum();
        for (ModuleEntry e : model.table.computed()) {
            n += e.module.totalParameterCount() + (e.copy == null ? 0 : e.copy.totalParameterCount());
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
                        + "counted", count(model, LoraModule.Kind.LINEAR), count(model, LoraModule.Kind.EMBEDDING),
                count(model, LoraModule.Kind.CONV2D), model.table.parametersOnlyView().size(),
                model.table.withCopies().size());
    }

    private static long count(LoraModel model, LoraModule.Kind kind) {
        return model.table.computed().stream().filter(e -> e.kind() == kind).count();
    }

    /** See {@link LoraModel#toString()}. */
    static String describe(LoraModel model) {
        return "LoraModel{modules=" + model.table.computed().size() + ", targeted=" + model.table.targetedPaths() + ", active="
                + model.activeAdapter() + ", merged=" + model.isMerged() + (model.modulesToSave().isEmpty() ? ""
                : ", modulesToSave=" + model.modulesToSave()) + "}";
    }
}
