package io.github.lora4j.model;

import io.github.lora4j.LoraModule;

/**
 * One row of {@link LoraModel}'s module table, whatever the module's kind ({@link LoraModule#kind()}): its path, the
 * layer the builder registered, whether LoRA targets it, its modules_to_save copy, or, for a parameters-only module,
 * just its parameter count. The table (path → entry, in the order modules were added) is the model's one record of
 * its modules; every per-kind or per-role map the model shows is a filtered view of it.
 */
final class ModuleEntry {

    /** The module path, as given to the builder. */
    final String path;
    /**
     * The computed layer ({@code LoraLinear}, {@code LoraEmbedding} or {@code LoraConv2d}); after
     * {@code mergeAndUnload} a plain one over the same arrays. Null for a parameters-only module.
     */
    LoraModule module;
    /** The modules_to_save copy that replaces {@link #module} while copies are enabled, or null. */
    LoraModule copy;
    /** Whether this module carries LoRA adapters (never together with a {@link #copy}). */
    boolean targeted;
    /** The parameter count of a parameters-only module; -1 for a computed one. */
    final long parametersOnly;

    private ModuleEntry(String path, LoraModule module, long parametersOnly) {
        this.path = path;
        this.module = module;
        this.parametersOnly = parametersOnly;
    }

    /** A computed module, not targeted, without a copy. */
    static ModuleEntry of(String path, LoraModule module) {
        return new ModuleEntry(path, module, -1);
    }

    /** A module counted for the parameter report only. */
    static ModuleEntry parametersOnly(String path, long parameters) {
        return new ModuleEntry(path, null, parameters);
    }

    /** A new entry like this one (the same layers), for a second model built from one builder. */
    ModuleEntry copyOf() {
        ModuleEntry e = new ModuleEntry(path, module, parametersOnly);
        e.copy = copy;
        e.targeted = targeted;
        return e;
    }

    /** Whether this is a computed module (linear, embedding, conv2d), not a parameters-only count. */
    boolean computed() {
        return module != null;
    }

    /** {@return the layer in use: the modules_to_save copy while {@code copiesEnabled}, otherwise the module} */
    LoraModule live(boolean copiesEnabled) {
        return copy != null && copiesEnabled ? copy : module;
    }

    /** {@return the module's kind; only for computed modules} */
    LoraModule.Kind kind() {
        return module.kind();
    }

    /** {@return the kind as messages name it: "linear", "embedding" or "conv2d"} */
    String kindName() {
        return switch (module.kind()) {
            case LINEAR -> "linear";
            case EMBEDDING -> "embedding";
            case CONV2D -> "conv2d";
        };
    }

    /** Whether the targeted layer has adapter {@code name} merged into its weight (a merged one is the active one). */
    boolean hasMerged(String name) {
        return module.isMerged() && name.equals(module.activeAdapter());
    }
}
