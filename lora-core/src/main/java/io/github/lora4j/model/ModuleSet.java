package io.github.lora4j.model;

import io.github.lora4j.LoraConv2d;
import io.github.lora4j.LoraEmbedding;
import io.github.lora4j.LoraLinear;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.function.Supplier;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * What {@link LoraModel.Builder} collects: the modules in the order they were added, each checked when added, and
 * the parameters-only counts. {@link #build()} refuses shared weight memory and hands copies of the maps to the model.
 */
final class ModuleSet {

    final List<String> order = new ArrayList<>();
    final Map<String, LoraLinear> linears = new LinkedHashMap<>();
    final Map<String, LoraEmbedding> embeddings = new LinkedHashMap<>();
    final Map<String, LoraConv2d> convs = new LinkedHashMap<>();
    final Map<String, Long> parametersOnly = new LinkedHashMap<>();

    /** The module {@code make} builds for a new {@code path}, which joins the order; its errors name the path. */
    <T> T checked(String path, Supplier<T> make) {
        checkPath(path);
        T module;
        try {
            module = make.get();
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException("module '" + path + "': " + e.getMessage(), e);
        }
        order.add(path);
        return module;
    }

    void parametersOnly(String path, long parameters) {
        checkPath(path);
        if (parameters < 0) {
            throw new IllegalArgumentException("parameters of module '" + path + "': expected >= 0, got " + parameters);
        }
        parametersOnly.put(path, parameters);
    }

    private void checkPath(String path) {
        Objects.requireNonNull(path, "module path must not be null");
        if (path.isBlank()) {
            throw new IllegalArgumentException("module path must not be blank, got '" + path + "'");
        }
        if (linears.containsKey(path) || embeddings.containsKey(path) || convs.containsKey(path)
                || parametersOnly.containsKey(path)) {
            throw new IllegalArgumentException("module '" + path + "' was already added");
        }
    }

    /** See {@link LoraModel.Builder#build()}. */
    LoraModel build() {
        if (order.isEmpty()) {
            throw new IllegalArgumentException("a model needs at least one linear, embedding or conv2d module, got "
                    + (parametersOnly.isEmpty() ? "none" : "only parameters-only modules " + parametersOnly.keySet()));
        }
        Map<String, INDArray> weights = new LinkedHashMap<>();
        for (String p : order) {
            weights.put(p, linears.containsKey(p) ? linears.get(p).weight() : embeddings.containsKey(p)
                    ? embeddings.get(p).table() : convs.get(p).weight());
        }
        Overlap.refuseShared(weights);
        return new LoraModel(this);
    }

    /** See {@link LoraModel#module}. */
    static LoraLinear module(LoraModel model, String path) {
        return find(model.modules, path, "module", model.embeddings.containsKey(path)
                ? " among the linear modules (it is an embedding: use embedding(path))" : "", "linear modules");
    }

    /** See {@link LoraModel#embedding}. */
    static LoraEmbedding embedding(LoraModel model, String path) {
        return find(model.embeddings, path, "embedding", "", "embeddings");
    }

    /** See {@link LoraModel#conv2d}. */
    static LoraConv2d conv2d(LoraModel model, String path) {
        return find(model.convs, path, "conv module", "", "conv modules");
    }

    private static <T> T find(Map<String, T> map, String path, String what, String hint, String available) {
        Objects.requireNonNull(path, "module path must not be null");
        T m = map.get(path);
        if (m == null) {
            throw new IllegalArgumentException("unknown " + what + " '" + path + "'" + hint + "; available " + available
                    + ": " + map.keySet());
        }
        return m;
    }
}
