package io.github.lora4j.model;

import static io.github.lora4j.TestData.assertBitwiseEquals;
import static io.github.lora4j.TestData.gaussian;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.github.lora4j.LoraConfig;
import io.github.lora4j.LoraLinear;
import io.github.lora4j.train.LoraTrainer;
import java.io.IOException;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.learning.config.Adam;

/** The code of docs/dora.md, run as written there (the guide copies it from here). */
class DoraGuideTest {

    @TempDir
    Path dir;

    private static LoraModel baseModel() {
        return LoraModel.builder()
                .linear("model.layers.0.self_attn.q_proj", gaussian(DataType.FLOAT, 1, 0.1, 64, 64), null)
                .linear("model.layers.0.self_attn.v_proj", gaussian(DataType.FLOAT, 2, 0.1, 64, 64), null)
                .build();
    }

    @Test
    void theGuideRuns() throws IOException {
        LoraModel model = baseModel();
        INDArray x = gaussian(DataType.FLOAT, 3, 1, 16, 64);
        INDArray target = gaussian(DataType.FLOAT, 4, 1, 16, 64);

        // docs/dora.md: train
        model.applyLora(LoraConfig.builder().rank(8).alpha(16).useDora(true).build(), List.of("q_proj", "v_proj"));
        LoraTrainer trainer = LoraTrainer.builder().updater(new Adam(1e-3)).build(model);  // steps A, B and m
        model.train();
        for (int step = 0; step < 20; step++) {
            INDArray y = model.forward("model.layers.0.self_attn.q_proj", x);
            model.module("model.layers.0.self_attn.q_proj").backward(y.sub(target), false);
            trainer.step();
        }
        LoraLinear q = model.module("model.layers.0.self_attn.q_proj");
        INDArray m = q.adapter("default").magnitude();                 // [64], PEFT's lora_magnitude_vector
        model.save(dir, "default");                                    // use_dora: true, <module>.lora_magnitude_vector
        // end

        // docs/dora.md: load and merge
        LoraModel served = baseModel();
        served.load(dir, "default");                                   // PEFT's DoRA files load the same way
        served.eval().merge();                                         // W = (m / ‖W + s·B·A‖_row) ⊙ (W + s·B·A)
        INDArray y = served.forward("model.layers.0.self_attn.q_proj", x);   // one gemm
        served.unmerge();                                              // W back, bit for bit
        // end

        assertEquals(64, m.length());
        assertTrue(model.trainableParameterCount() == 2 * (8 * 128 + 64), "A, B and m of two modules");
        model.eval();
        INDArray unmerged = model.forward("model.layers.0.self_attn.q_proj", x);
        assertTrue(io.github.lora4j.TestData.normwiseRelativeError(y, unmerged) < 1e-5, "merged vs unmerged");
        assertBitwiseEquals(baseModel().module("model.layers.0.self_attn.q_proj").weight(),
                served.module("model.layers.0.self_attn.q_proj").weight(), "W after unmerge");
    }
}
