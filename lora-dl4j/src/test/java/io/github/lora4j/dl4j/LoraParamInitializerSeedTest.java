package io.github.lora4j.dl4j;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;

import io.github.lora4j.LoraConfig;
import io.github.lora4j.model.LoraModel;
import java.util.Arrays;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/** A LoRA layer's initial A is lora-core's for the same module name: {@code LoraConfig.forModule(layer name)}. */
class LoraParamInitializerSeedTest {

    @Test
    void aLayersInitialAdapterIsLoraModelsForTheSameName() {
        LoraConfig cfg = LoraConfig.builder().rank(2).alpha(4).seed(9).build();
        INDArray w = Nd4j.rand(DataType.FLOAT, 6, 4);      // [in, out], as DL4J stores it
        for (String name : List.of("dense0", "dense1")) {
            INDArray[] ab = LoraParamInitializer.initialAdapter(name, w.dup('f'), cfg);
            LoraModel model = LoraModel.builder().linearInOut(name, w.dup(), null).build();
            model.applyLora(cfg, List.of(name));
            assertArrayEquals(model.module(name).loraA("default").data().asFloat(), ab[0].dup('c').data().asFloat(), name);
            assertArrayEquals(new float[ab[1].data().asFloat().length], ab[1].dup('c').data().asFloat(), "B = 0");
        }
        assertFalse(Arrays.equals(LoraParamInitializer.initialAdapter("dense0", w, cfg)[0].dup('c').data().asFloat(),
                LoraParamInitializer.initialAdapter("dense1", w, cfg)[0].dup('c').data().asFloat()), "names differ");
    }
}
