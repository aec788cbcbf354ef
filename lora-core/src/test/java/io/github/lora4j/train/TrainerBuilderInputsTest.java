package io.github.lora4j.train;

import static org.junit.jupiter.api.Assertions.assertEquals;

import io.github.lora4j.LoraConfig;
import io.github.lora4j.LoraLinear;
import io.github.lora4j.TestData;
import io.github.lora4j.WeightLayout;
import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.learning.config.Sgd;

/** {@link LoraTrainer.Builder} copies the (mutable) updater configuration it is handed. */
class TrainerBuilderInputsTest {

    @Test
    void changingTheUpdaterAfterHandingItToTheBuilderChangesNoTrainer() {
        LoraLinear layer = TestData.trainedLayer(DataType.DOUBLE, 3, 4, 4, LoraConfig.builder().rank(2).build(), true);
        Sgd sgd = new Sgd(0.1);
        LoraTrainer.Builder builder = LoraTrainer.builder().updater(sgd);
        sgd.setLearningRate(99);
        LoraTrainer trainer = builder.build(layer);
        assertEquals(0.1, trainer.updater().getLearningRate(0, 0), "the learning rate handed over");
        sgd.setLearningRate(7);
        LoraLinear other = LoraLinear.base(TestData.gaussian(DataType.DOUBLE, 4, 1, 4, 4), null, WeightLayout.OUT_IN);
        assertEquals(0.1, builder.build(other).updater().getLearningRate(0, 0), "the builder's own copy");
    }
}
