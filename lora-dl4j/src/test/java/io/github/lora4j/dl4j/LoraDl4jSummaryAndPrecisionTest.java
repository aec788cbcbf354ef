package io.github.lora4j.dl4j;

import static io.github.lora4j.dl4j.Bits.assertBitwise;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.github.lora4j.LoraConfig;
import io.github.lora4j.io.PeftAdapter;
import io.github.lora4j.io.PeftAdapterFiles;
import java.io.IOException;
import java.nio.file.Path;
import java.util.List;
import org.deeplearning4j.nn.conf.RNNFormat;
import org.deeplearning4j.nn.multilayer.MultiLayerNetwork;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.learning.config.Adam;

/**
 * Issue 31 item 7: DL4J's {@code summary()} reports every parameter of a LoRA network trainable (it counts only
 * TransferLearning's {@code FrozenLayer}), so lora-dl4j gives its own counts; and {@code saveAdapter} keeps a DOUBLE
 * network's precision, so the adapter reloads bit for bit.
 */
class LoraDl4jSummaryAndPrecisionTest {

    private static final LoraConfig CONFIG = LoraConfig.builder().rank(2).alpha(4).build();

    @TempDir
    Path tmp;

    @Test
    void dl4jsSummaryCannotSeeTheFrozenParametersAndLoraDl4jsSummaryCountsThem() {
        MultiLayerNetwork lora = LoraDl4j.apply(Nets.mln(DataType.FLOAT, new Adam(0.01), 1), CONFIG, "layer0", "layer2");
        long trainable = 2 * (Nets.IN + Nets.HIDDEN) + 2 * (Nets.HIDDEN + Nets.CLASSES);
        long all = lora.numParams();
        String dl4j = lora.summary();
        assertTrue(dl4j.matches(String.format("(?s).*Trainable Parameters:\\s+%,d\\s.*Frozen Parameters:\\s+0\\s.*", all)),
                "DL4J's own summary (the limitation the docs describe; if this fails, DL4J changed and the docs must too): "
                        + dl4j);

        assertEquals(trainable, LoraDl4j.trainableParameterCount(lora));
        assertEquals(all, LoraDl4j.totalParameterCount(lora));
        String line = String.format(java.util.Locale.ROOT, "trainable params: %,d || all params: %,d || trainable%%: %.4f",
                trainable, all, 100.0 * trainable / all);
        assertEquals(line, LoraDl4j.trainableParametersReport(lora));
        String summary = LoraDl4j.summary(lora);
        List<String> lines = summary.lines().toList();
        assertEquals(1 + 3 + 1, lines.size(), summary);
        assertTrue(lines.get(1).matches("layer0\\s+LoraDenseLayerImpl\\s+102\\s+32\\s+LoRA r=2: loraA, loraB train; "
                + "W, b frozen"), lines.get(1));
        assertTrue(lines.get(2).matches("layer1\\s+LoraDenseLayerImpl\\s+110\\s+0\\s+frozen: LoRA layer without "
                + "adapter"), lines.get(2));
        assertTrue(lines.get(3).matches("layer2\\s+LoraOutputLayerImpl\\s+59\\s+26\\s+LoRA r=2.*"), lines.get(3));
        assertEquals(line, lines.get(4));
    }

    @Test
    void theSummaryNamesHowEachKindOfLayerIsFrozen() {
        MultiLayerNetwork lora = LoraDl4j.apply(LoraDl4jRnnTest.net(DataType.FLOAT, RNNFormat.NCW, 2), CONFIG, "fc0",
                "out");
        String summary = LoraDl4j.summary(lora);
        assertTrue(summary.contains("frozen: FrozenLayerWithBackprop(LSTM)"), summary);
        assertTrue(summary.lines().anyMatch(l -> l.startsWith("out ") && l.contains("LoraRnnOutputLayerImpl")), summary);
        assertTrue(summary.endsWith(LoraDl4j.trainableParametersReport(lora) + System.lineSeparator()), summary);
        assertThrows(IllegalArgumentException.class, () -> LoraDl4j.summary(Nets.mln(DataType.FLOAT, new Adam(), 1)),
                "a network without LoRA layers");
    }

    private static MultiLayerNetwork trained(DataType type) {
        MultiLayerNetwork lora = LoraDl4j.apply(Nets.mln(type, new Adam(0.02), 3), CONFIG, "layer0", "layer2");
        lora.fit(Nets.task(type, 5, 6, 64));
        lora.fit(Nets.task(type, 5, 7, 64));
        return lora;
    }

    private static void assertSameAdapters(MultiLayerNetwork expected, MultiLayerNetwork actual, String what) {
        for (int i : new int[] {0, 2}) {
            for (String k : List.of("loraA", "loraB")) {
                assertBitwise(expected.getLayer(i).getParam(k), actual.getLayer(i).getParam(k), what + ", layer" + i
                        + " " + k);
            }
        }
    }

    @Test
    void aDoubleNetworksAdapterIsSavedAsF64AndReloadsBitForBit() throws IOException {
        for (DataType type : List.of(DataType.DOUBLE, DataType.FLOAT)) {
            MultiLayerNetwork lora = trained(type);
            Path dir = tmp.resolve(type.name());
            LoraDl4j.saveAdapter(lora, dir);
            PeftAdapter file = PeftAdapterFiles.read(dir);
            assertEquals(type, file.a("layer0").dataType(), "the file's tensors are " + (type == DataType.DOUBLE
                    ? "F64" : "F32"));
            MultiLayerNetwork fresh = LoraDl4j.apply(Nets.mln(type, new Adam(0.02), 3), CONFIG, "layer0", "layer2");
            LoraDl4j.loadAdapter(fresh, dir);
            assertSameAdapters(lora, fresh, type + " network, default file type");
            INDArray x = Nets.task(type, 5, 8, 16).getFeatures();
            assertBitwise(lora.output(x), fresh.output(x), type + ": outputs after the round trip");
        }
        // the option: a DOUBLE network written as F32 reloads rounded to float
        MultiLayerNetwork lora = trained(DataType.DOUBLE);
        LoraDl4j.saveAdapter(lora, tmp.resolve("f32"), DataType.FLOAT);
        assertEquals(DataType.FLOAT, PeftAdapterFiles.read(tmp.resolve("f32")).a("layer0").dataType());
        MultiLayerNetwork fresh = LoraDl4j.apply(Nets.mln(DataType.DOUBLE, new Adam(0.02), 3), CONFIG, "layer0",
                "layer2");
        LoraDl4j.loadAdapter(fresh, tmp.resolve("f32"));
        INDArray a = lora.getLayer(0).getParam("loraA");
        INDArray reloaded = fresh.getLayer(0).getParam("loraA");
        assertFalse(java.util.Arrays.equals(Bits.of(a), Bits.of(reloaded)), "rounded to float");
        assertBitwise(a.castTo(DataType.FLOAT).castTo(DataType.DOUBLE), reloaded, "exactly the float rounding");
        assertThrows(IllegalArgumentException.class, () -> LoraDl4j.saveAdapter(lora, tmp.resolve("int"),
                DataType.INT), "an integer file type");
    }
}
