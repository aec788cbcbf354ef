package io.github.lora4j.io;

import java.util.Set;

/**
 * The one rule for module paths in PEFT files, shared by the reader ({@link PeftAdapterLayout}) and the writer
 * ({@link SavePlan}), so that every path {@link PeftAdapterFiles.Saver#save} writes is one {@link PeftAdapterFiles#read}
 * reads back as the same module. Every host saves through the writer (lora-core's layers and {@code LoraModel},
 * DL4J layer names, SameDiff weight names), so the rule covers them all, before anything is written.
 *
 * <p>A path is dot-separated segments (the module path without {@code base_model.model.}): none empty or blank (no
 * leading, trailing or doubled dot), none a name PEFT gives a role in a tensor key ({@link #ROLE_SEGMENTS}: a path
 * holding {@code lora_A} would be read as a different module), and valid Unicode (UTF-8, the file's encoding, cannot
 * store an unpaired surrogate).
 */
final class ModulePaths {

    /** Path segments that name a role in a tensor key, never a module. */
    static final Set<String> ROLE_SEGMENTS = Set.of("lora_A", "lora_B", "lora_embedding_A", "lora_embedding_B",
            "lora_magnitude_vector", "modules_to_save", "original_module", "base_layer", "lora_dropout");

    private ModulePaths() {
    }

    /**
     * Why {@code module} cannot be a module path in a PEFT file, or null if it can. The reason completes a sentence
     * that names the path: "module path 'x..y' has an empty segment ...".
     */
    static String problem(String module) {
        if (module == null) {
            return "is null";
        }
        if (module.isEmpty()) {
            return "is empty";
        }
        for (String segment : module.split("\\.", -1)) {
            if (segment.isBlank()) {
                return "has an empty segment (a leading, trailing or doubled dot, "
                        + "or a blank name)";
            }
            if (ROLE_SEGMENTS.contains(segment)) {
                return "holds the role name '" + segment + "'"
                        + (segment.equals("lora_magnitude_vector") ? " (PEFT stores DoRA's magnitude as "
                        + "<module>.lora_magnitude_vector, with no .weight and no adapter name after it)"
                        : ", which PEFT's tensor keys use for LoRA's own tensors (a key still holding an adapter "
                        + "name, such as lora_A.default.weight, reads this way too)");
            }
        }
        for (int i = 0; i < module.length(); i++) {
            char c = module.charAt(i);
            if (Character.isHighSurrogate(c) && i + 1 < module.length() && Character.isLowSurrogate(module.charAt(i + 1))) {
                i++;
            } else if (Character.isSurrogate(c)) {
                return "holds an unpaired surrogate at index " + i
                        + " (not valid Unicode; UTF-8 files cannot store it)";
            }
        }
        return null;
    }

    /**
     * Refuses a path a PEFT file cannot hold, before a save writes anything: {@link IllegalArgumentException}
     * naming the path, the rule and the remedy.
     */
    static String requireSavable(String module, String role) {
        String problem = problem(module);
        if (problem != null) {
            throw new IllegalArgumentException(role + " path " + quoted(module) + " " + problem + ", so it cannot be "
                    + "saved: read would refuse the file or take the path for another module. Expected dot-separated "
                    + "names, none empty and none of " + ROLE_SEGMENTS + "; rename the module (layer or variable). "
                    + "Nothing was written");
        }
        return module;
    }

    /** {@code 'path'} for a message, cut to 100 characters; {@code null} as is. */
    static String quoted(String module) {
        return module == null ? "null" : "'" + Safetensors.brief(module) + "'";
    }
}
