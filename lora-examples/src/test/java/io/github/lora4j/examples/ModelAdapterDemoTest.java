package io.github.lora4j.examples;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class ModelAdapterDemoTest {

    @Test
    void trainsSavesAndReloadsTheAdapterWithIdenticalOutputs(@TempDir Path dir) throws IOException {
        ModelAdapterDemo.Result r = ModelAdapterDemo.run(dir, 150);
        // 2 blocks × (4·32·32 + 32·64 + 64 + 64·32 + 32) = 16,576 base parameters; 4 adapters × 4·(32 + 32) = 1,024
        assertEquals("trainable params: 0 || all params: 16,576 || trainable%: 0.0000", r.reportBefore());
        assertEquals("trainable params: 1,024 || all params: 17,600 || trainable%: 5.8182", r.report());
        assertEquals(List.of("model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj",
                "model.layers.1.self_attn.q_proj", "model.layers.1.self_attn.v_proj"), r.targetedModules());
        assertTrue(r.finalLoss() < 0.2 * r.initialLoss(), "MSE " + r.initialLoss() + " -> " + r.finalLoss());
        assertTrue(r.baseWeightsUnchanged(), "training must not touch the base weights");
        assertTrue(r.identicalReloaded(), "reloaded outputs differ by up to " + r.maxAbsDiffReloaded());
        assertEquals(0.0, r.maxAbsDiffReloaded());
        assertEquals(4L * 16_576, r.baseWeightBytes());
        // 1,024 float32 values plus the safetensors header; far below the base weights
        assertTrue(r.adapterFileBytes() > 4L * 1_024 && r.adapterFileBytes() < 4L * 1_024 + 4_096,
                "adapter file " + r.adapterFileBytes() + " B");
        assertTrue(r.configFileBytes() > 0);
    }
}
