package io.github.lora4j.dl4j;

import io.github.lora4j.LoraConfig;
import io.github.lora4j.io.PeftAdapterLayout;
import java.nio.file.Path;

/**
 * DoRA ({@link LoraConfig#useDora()}, PEFT's {@code use_dora}) is refused by name in lora-dl4j, not yet implemented:
 * its layers carry {@code loraA} and {@code loraB} as DL4J parameters, not DoRA's magnitude vector, so taking a DoRA
 * config or file as plain LoRA would silently compute another model. DoRA trains in lora-core's {@code LoraLinear},
 * {@code LoraModel} and SameDiff path (docs/dora.md).
 */
final class DoraRefusal {

    private DoraRefusal() {
    }

    /** Refuses a DoRA config given to {@code LoraDl4j.apply}. */
    static void refuse(LoraConfig config) {
        if (config.useDora()) {
            throw new IllegalArgumentException("DoRA (useDora = true) is not supported by lora-dl4j: its layers carry "
                    + "loraA and loraB only, not DoRA's magnitude vector; expected useDora = false. Train DoRA with "
                    + "lora-core's LoraLinear or LoraModel; the network is unchanged");
        }
    }

    /** Refuses a DoRA file given to {@code LoraDl4j.loadAdapter}, before any tensor is read. */
    static void refuse(PeftAdapterLayout layout, Path dir) {
        if (layout.config().useDora()) {
            throw new IllegalArgumentException("the adapter in " + dir + " is DoRA (use_dora: true, with "
                    + "lora_magnitude_vector tensors), which lora-dl4j layers cannot hold; load it into a LoraModel or "
                    + "LoraLinear; nothing was loaded");
        }
    }
}
