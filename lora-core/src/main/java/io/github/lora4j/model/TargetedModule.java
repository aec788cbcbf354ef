package io.github.lora4j.model;

import io.github.lora4j.LoraAdapter;
import io.github.lora4j.LoraConv2d;
import io.github.lora4j.LoraEmbedding;
import io.github.lora4j.LoraLinear;
import io.github.lora4j.MergeMode;
import java.util.List;

/**
 * One LoRA-carrying module of a {@link LoraModel}, whatever its kind, as the model-wide operations see it: exactly
 * one of {@code linear}, {@code embedding}, {@code conv} is non-null.
 */
record TargetedModule(String path, LoraLinear linear, LoraEmbedding embedding, LoraConv2d conv) {

    /** The LoRA-carrying modules of {@code model}, in model order. */
    static List<TargetedModule> all(LoraModel model) {
        return model.order.stream().filter(p -> model.targeted.containsKey(p) || model.targetedEmbeddings.containsKey(p)
                || model.targetedConvs.containsKey(p)).map(p -> new TargetedModule(p, model.targeted.get(p),
                model.targetedEmbeddings.get(p), model.targetedConvs.get(p))).toList();
    }

    static List<String> paths(LoraModel model) {
        return all(model).stream().map(TargetedModule::path).toList();
    }

    /** Whether {@code model} has no LoRA applied. */
    static boolean none(LoraModel model) {
        return model.targeted.isEmpty() && model.targetedEmbeddings.isEmpty() && model.targetedConvs.isEmpty();
    }

    static void requireApplied(LoraModel model) {
        if (none(model)) {
            throw new IllegalStateException("no LoRA applied yet; call applyLora(config, targetModules) first");
        }
    }

    String kind() {
        return linear != null ? "linear" : embedding != null ? "embedding" : "conv2d";
    }

    List<String> adapterNames() {
        return linear != null ? linear.adapterNames() : embedding != null ? embedding.adapterNames() : conv.adapterNames();
    }

    String activeAdapter() {
        return linear != null ? linear.activeAdapter() : embedding != null ? embedding.activeAdapter()
                : conv.activeAdapter();
    }

    boolean isMerged() {
        return linear != null ? linear.isMerged() : embedding != null ? embedding.isMerged() : conv.isMerged();
    }

    /** Whether adapter {@code name} is the one merged into the weight (a merged adapter is always the active one). */
    boolean hasMerged(String name) {
        return isMerged() && name.equals(activeAdapter());
    }

    boolean adaptersEnabled() {
        return linear != null ? linear.adaptersEnabled() : embedding != null ? embedding.adaptersEnabled()
                : conv.adaptersEnabled();
    }

    void setAdaptersEnabled(boolean on) {
        if (linear != null) {
            if (on) {
                linear.enableAdapters();
            } else {
                linear.disableAdapters();
            }
        } else if (embedding != null) {
            if (on) {
                embedding.enableAdapters();
            } else {
                embedding.disableAdapters();
            }
        } else if (on) {
            conv.enableAdapters();
        } else {
            conv.disableAdapters();
        }
    }

    LoraAdapter adapter(String name) {
        return linear != null ? linear.adapter(name) : embedding != null ? embedding.adapter(name) : conv.adapter(name);
    }

    void deleteAdapter(String name) {
        if (linear != null) {
            linear.deleteAdapter(name);
        } else if (embedding != null) {
            embedding.deleteAdapter(name);
        } else {
            conv.deleteAdapter(name);
        }
    }

    void setAdapterScale(String name, double scale) {
        if (linear != null) {
            linear.setAdapterScale(name, scale);
        } else if (embedding != null) {
            embedding.setAdapterScale(name, scale);
        } else {
            conv.setAdapterScale(name, scale);
        }
    }

    void merge(MergeMode mode) {
        if (linear != null) {
            linear.merge(mode);
        } else if (embedding != null) {
            embedding.merge(mode);
        } else {
            conv.merge(mode);
        }
    }

    void unmerge() {
        if (linear != null) {
            linear.unmerge();
        } else if (embedding != null) {
            embedding.unmerge();
        } else {
            conv.unmerge();
        }
    }
}
