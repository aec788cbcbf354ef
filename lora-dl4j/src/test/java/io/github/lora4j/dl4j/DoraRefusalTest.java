package io.github.lora4j.dl4j;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.github.lora4j.LoraConfig;
import io.github.lora4j.LoraLinear;
import io.github.lora4j.WeightLayout;
import io.github.lora4j.io.PeftAdapterFiles;
import java.io.IOException;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;
import org.deeplearning4j.nn.multilayer.MultiLayerNetwork;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.learning.config.Adam;

/**
 * lora-dl4j refuses DoRA by name (apply and loadAdapter): its layers hold loraA and loraB, not DoRA's magnitude, and
 * reading a DoRA config or file as plain LoRA would silently compute another model.
 */
class DoraRefusalTest {

    private static final LoraConfig LORA = LoraConfig.builder().rank(2).alpha(4).build();

    @TempDir
    Path tmp;

    @Test
    void applyRefusesADoraConfig() {
        MultiLayerNetwork net = Nets.mln(DataType.FLOAT, new Adam(0.01), 7);
        INDArray before = net.params().dup();
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> LoraDl4j.apply(net, LORA.toBuilder().useDora(true).build(), "layer0"));
        assertTrue(e.getMessage().contains("DoRA") && e.getMessage().contains("lora-dl4j"), e.getMessage());
        assertEquals(before, net.params(), "the network is not changed");
    }

    @Test
    void loadAdapterRefusesADoraFileAndChangesNothing() throws IOException {
        MultiLayerNetwork lora = LoraDl4j.apply(Nets.mln(DataType.FLOAT, new Adam(0.01), 7), LORA, "layer0");
        long nIn = lora.getLayer(0).paramTable().get("W").rows();
        long nOut = lora.getLayer(0).paramTable().get("W").columns();
        LoraLinear dora = LoraLinear.wrap(Nd4j.rand(DataType.FLOAT, nIn, nOut).addi(0.5), null,
                LORA.toBuilder().useDora(true).build(), WeightLayout.IN_OUT);
        Map<String, LoraLinear> modules = new LinkedHashMap<>();
        modules.put("layer0", dora);
        Path dir = tmp.resolve("dora");
        PeftAdapterFiles.save(dir, modules, LoraLinear.DEFAULT_ADAPTER);
        INDArray before = lora.params().dup();
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> LoraDl4j.loadAdapter(lora, dir));
        assertTrue(e.getMessage().contains("is DoRA (use_dora: true") && e.getMessage().contains("nothing was loaded"),
                e.getMessage());
        assertEquals(before, lora.params(), "parameters after the refused load");
    }
}
