package io.github.lora4j.model;

import io.github.lora4j.LoraConv2d;
import io.github.lora4j.LoraEmbedding;
import io.github.lora4j.LoraLinear;
import io.github.lora4j.LoraModule;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Objects;
import java.util.function.Supplier;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * What {@link LoraModel.Builder} collects: the module table, each module checked when added, in the order added.
 * {@link #build()} refuses shared weight memory and hands a copy of the table to the model.
 */
final class ModuleSet {

    final ModuleTable table = new ModuleTable();

    /** Adds the module {@code make} builds for a new {@code path}; its errors name the path. */
    void add(String path, Supplier<? extends LoraModule> make) {
        checkPath(path);
        LoraModule module;
        try {
            module = make.get();
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException("module '" + path + "': " + e.getMessage(), e);
        }
        table.add(ModuleEntry.of(path, module));
    }

    void parametersOnly(String path, long parameters) {
        checkPath(path);
        if (parameters < 0) {
            throw new IllegalArgumentException("parameters of module '" + path + "': expected >= 0, got " + parameters);
        }
        table.add(ModuleEntry.parametersOnly(path, parameters));
    }

    private void checkPath(String path) {
        Objects.requireNonNull(path, "module path must not be null");
        if (path.isBlank()) {
            throw new IllegalArgumentException("module path must not be blank, got '" + path + "'");
        }
        if (table.contains(path)) {
            throw new IllegalArgumentException("module '" + path + "' was already added");
        }
    }

    /** See {@link LoraModel.Builder#build()}. */
    LoraModel build() {
        if (table.computed().isEmpty()) {
            Map<String, Long> only = table.parametersOnlyView();
            throw new IllegalArgumentException("a model needs at least one linear, embedding or conv2d module, got "
                    + (only.isEmpty() ? "none" : "only parameters-only modules " + only.keySet()));
        }
        Map<String, INDArray> weights = new LinkedHashMap<>();
        for (ModuleEntry e : table.computed()) {
            weights.put(e.path, weightOf(e.module));
        }
        Overlap.refuseShared(weights);
        return new LoraModel(table.copy());
    }

    /** The weight (or table, or kernel) of {@code module}: the array a merge writes. */
    static INDArray weightOf(LoraModule module) {
        return switch (module.kind()) {
            case LINEAR -> ((LoraLinear) module).weight();
            case EMBEDDING -> ((LoraEmbedding) module).table();
            case CONV2D -> ((LoraConv2d) module).weight();
        };
    }

    /** See {@link LoraModel#module}. */
    static LoraLinear module(LoraModel model, String path) {
        ModuleEntry e = find(model, path);
        return find(model, path, LoraLinear.class, "module", e != null && e.kind() == LoraModule.Kind.EMBEDDING
                ? " among the linear modules (it is an embedding: use embedding(path))" : "", "linear modules");
    }

    /** See {@link LoraModel#embedding}. */
    static LoraEmbedding embedding(LoraModel model, String path) {
        return find(model, path, LoraEmbedding.class, "embedding", "", "embeddings");
    }

    /** See {@link LoraModel#conv2d}. */
    static LoraConv2d conv2d(LoraModel model, String path) {
        return find(model, path, LoraConv2d.class, "conv module", "", "conv modules");
    }

    private static ModuleEntry find(LoraModel model, String path) {
        return model.table.get(Objects.requireNonNull(path, "module path must not be null"));
    }

    /** The live layer of {@code type} at {@code path} (one table look-up), or a refusal listing that kind's paths. */
    private static <T extends LoraModule> T find(LoraModel model, String path, Class<T> type, String what, String hint,
                                                 String available) {
        ModuleEntry e = find(model, path);
        LoraModule m = e == null ? null : model.table.live(e);
        if (!type.isInstance(m)) {
            throw new IllegalArgumentException("unknown " + what + " '" + path + "'" + hint + "; available " + available
                    + ": " + model.table.layers(type, false).keySet());
        }
        return type.cast(m);
    }
}
