package io.github.lora4j.io;

import static io.github.lora4j.TestData.assertBitwiseEquals;
import static io.github.lora4j.TestData.gaussian;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.github.lora4j.LoraConfig;
import io.github.lora4j.LoraInit;
import io.github.lora4j.LoraLinear;
import io.github.lora4j.WeightLayout;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/**
 * {@link PeftAdapterFiles.Saver#adapterTensors}: hosts that keep A and B themselves save the very files a
 * {@link LoraLinear} holding those tensors writes (the way lora-dl4j and SameDiff saved before, through a throwaway
 * layer), without building one.
 */
class AdapterTensorsSaveTest {

    /**
     * The law: for any shapes, ranks, alphas, layouts, data types, file types, DoRA or not, both files are byte for byte
     * those of the throwaway-layer path (same provenance given to both, since that path's layer had init ZERO).
     */
    @Property(tries = 40)
    void savingBareTensorsWritesTheSameBytesAsSavingLayersHoldingThem(@ForAll long seed) throws IOException {
        SplittableRandom rng = new SplittableRandom(seed);
        DataType type = rng.nextBoolean() ? DataType.FLOAT : DataType.DOUBLE;
        DataType fileType = List.of(DataType.FLOAT, DataType.DOUBLE, DataType.HALF, DataType.BFLOAT16)
                .get(rng.nextInt(4));
        boolean dora = rng.nextBoolean();
        double dropout = rng.nextBoolean() ? 0 : 0.25;
        boolean rsLora = rng.nextBoolean();
        Map<String, LoraLinear> layers = new LinkedHashMap<>();
        List<AdapterTensors> tensors = new ArrayList<>();
        int modules = 1 + rng.nextInt(3);
        for (int m = 0; m < modules; m++) {
            String module = "model.layers." + m + (rng.nextBoolean() ? ".q_proj" : ".fc");
            long in = 1 + rng.nextInt(6);
            long out = 1 + rng.nextInt(6);
            int r = 1 + rng.nextInt(4);
            WeightLayout layout = rng.nextBoolean() ? WeightLayout.OUT_IN : WeightLayout.IN_OUT;
            LoraConfig config = LoraConfig.builder().rank(r).alpha(1 + rng.nextInt(16)).dropout(dropout)
                    .rsLora(rsLora).useDora(dora).seed(seed + m).build();
            INDArray w = layout == WeightLayout.OUT_IN ? gaussian(type, seed + 10 * m, 1, out, in)
                    : gaussian(type, seed + 10 * m, 1, in, out);
            INDArray a = gaussian(type, seed + 10 * m + 1, 1, r, in);
            INDArray b = gaussian(type, seed + 10 * m + 2, 1, out, r);
            INDArray mag = dora ? gaussian(type, seed + 10 * m + 3, 1, out) : null;
            // The old path: a stand-in layer over W with an adapter of init ZERO whose weights are set.
            LoraLinear layer = LoraLinear.base(w, null, layout);
            layer.addAdapter(LoraLinear.DEFAULT_ADAPTER, config.toBuilder().init(LoraInit.ZERO).build());
            if (dora) {
                layer.setAdapterWeights(LoraLinear.DEFAULT_ADAPTER, a, b, mag);
            } else {
                layer.setAdapterWeights(LoraLinear.DEFAULT_ADAPTER, a, b);
            }
            layers.put(module, layer);
            tensors.add(new AdapterTensors(module, a, b, mag, config, layout));
        }
        LoraConfig provenance = tensors.get(0).config();
        Path dir = Files.createTempDirectory("adapter-tensors");
        try {
            PeftAdapterFiles.saver().linears(layers).fileType(fileType).provenance(provenance)
                    .save(dir.resolve("layers"), "default");
            PeftAdapterFiles.saver().adapterTensors("default", tensors).fileType(fileType).provenance(provenance)
                    .save(dir.resolve("tensors"), "default");
            for (String file : List.of(PeftAdapterFiles.MODEL_FILE, PeftAdapterFiles.CONFIG_FILE)) {
                assertArrayEquals(Files.readAllBytes(dir.resolve("layers").resolve(file)),
                        Files.readAllBytes(dir.resolve("tensors").resolve(file)), file + " differs, seed " + seed);
            }
        } finally {
            deleteTree(dir);
        }
    }

    @Test
    void withoutAGivenProvenanceTheFileRecordsTheTensorsOwnInitAndSeed(@org.junit.jupiter.api.io.TempDir Path dir)
            throws IOException {
        // docs/peft-files.md: bare tensors
        LoraConfig config = LoraConfig.builder().rank(2).init(LoraInit.GAUSSIAN).seed(1234).build();
        INDArray[] ab = config.initialWeights(5, 3, DataType.FLOAT);
        PeftAdapterFiles.saver().adapterTensors("default",
                List.of(new AdapterTensors("fc", ab[0], ab[1], null, config, WeightLayout.IN_OUT))).save(dir, "default");
        // end
        PeftAdapter read = PeftAdapterFiles.read(dir);
        assertEquals("GAUSSIAN", read.metadata().get("lora4j.init"));
        assertEquals("1234", read.metadata().get("lora4j.seed"));
        assertEquals("IN_OUT", read.metadata().get("lora4j.layout"));
        assertTrue(read.config().fanInFanOut(), "an [in, out] module makes the file fan_in_fan_out");
        assertBitwiseEquals(ab[0], read.a("fc"), "A");
        assertBitwiseEquals(ab[1], read.b("fc"), "B");
    }

    @Test
    void tensorsAreCopiedWhenHandedOverAndNeverWritten(@org.junit.jupiter.api.io.TempDir Path dir) throws IOException {
        LoraConfig config = LoraConfig.builder().rank(2).build();
        INDArray a = gaussian(DataType.FLOAT, 1, 1, 2, 4);
        INDArray b = gaussian(DataType.FLOAT, 2, 1, 3, 2);
        INDArray a0 = a.dup();
        INDArray b0 = b.dup();
        PeftAdapterFiles.Saver saver = PeftAdapterFiles.saver().adapterTensors("default",
                List.of(new AdapterTensors("fc", a, b, null, config, WeightLayout.OUT_IN)));
        a.assign(7);                                              // the host trains on after handing them over
        b.assign(Double.NaN);
        saver.save(dir, "default");
        PeftAdapter read = PeftAdapterFiles.read(dir);
        assertBitwiseEquals(a0, read.a("fc"), "A as handed over");
        assertBitwiseEquals(b0, read.b("fc"), "B as handed over");
    }

    @Test
    void tensorsSaveUnderTheirAdapterNameOnlyAndSaveAllWritesEach(@org.junit.jupiter.api.io.TempDir Path dir)
            throws IOException {
        LoraConfig c1 = LoraConfig.builder().rank(1).alpha(3).build();
        LoraConfig c2 = LoraConfig.builder().rank(2).alpha(5).build();
        PeftAdapterFiles.Saver saver = PeftAdapterFiles.saver()
                .adapterTensors("default", List.of(new AdapterTensors("fc", gaussian(DataType.FLOAT, 1, 1, 1, 4),
                        gaussian(DataType.FLOAT, 2, 1, 3, 1), null, c1, WeightLayout.OUT_IN)))
                .adapterTensors("sql", List.of(new AdapterTensors("fc", gaussian(DataType.FLOAT, 3, 1, 2, 4),
                        gaussian(DataType.FLOAT, 4, 1, 3, 2), null, c2, WeightLayout.OUT_IN)));
        IllegalArgumentException none = assertThrows(IllegalArgumentException.class,
                () -> saver.save(dir.resolve("x"), "other"));
        assertTrue(none.getMessage().contains("no module has adapter 'other'"), none.getMessage());
        assertFalse(Files.exists(dir.resolve("x")), "nothing written");
        saver.saveAll(dir, List.of("default", "sql"));
        assertEquals(1, PeftAdapterFiles.read(dir).rank("fc"));
        assertEquals(3.0, PeftAdapterFiles.read(dir).alpha("fc"));
        assertEquals(2, PeftAdapterFiles.read(dir.resolve("sql")).rank("fc"));
        assertEquals(5.0, PeftAdapterFiles.read(dir.resolve("sql")).alpha("fc"));
    }

    @Test
    void badTensorsAreRefusedNamingModuleExpectedAndActual(@org.junit.jupiter.api.io.TempDir Path dir) {
        LoraConfig r2 = LoraConfig.builder().rank(2).build();
        INDArray a = gaussian(DataType.FLOAT, 1, 1, 2, 4);
        INDArray b = gaussian(DataType.FLOAT, 2, 1, 3, 2);
        assertMessage(() -> new AdapterTensors("fc", gaussian(DataType.FLOAT, 1, 1, 3, 4), b, null, r2,
                WeightLayout.OUT_IN), "module 'fc' lora_A: expected shape [2, in]", "[3, 4]");
        assertMessage(() -> new AdapterTensors("fc", a, gaussian(DataType.FLOAT, 2, 1, 3, 1), null, r2,
                WeightLayout.OUT_IN), "module 'fc' lora_B: expected shape [out, 2]", "[3, 1]");
        assertMessage(() -> new AdapterTensors("fc", a, b.castTo(DataType.DOUBLE), null, r2, WeightLayout.OUT_IN),
                "lora_B: expected FLOAT (lora_A's type), got DOUBLE");
        assertMessage(() -> new AdapterTensors("fc", a.castTo(DataType.INT), b, null, r2, WeightLayout.OUT_IN),
                "lora_A: expected FLOAT or DOUBLE, got INT");
        assertMessage(() -> new AdapterTensors("fc", a, b, Nd4j.ones(DataType.FLOAT, 3), r2, WeightLayout.OUT_IN),
                "the config is plain LoRA, so expected no magnitude");
        LoraConfig dora = r2.toBuilder().useDora(true).build();
        assertMessage(() -> new AdapterTensors("fc", a, b, null, dora, WeightLayout.OUT_IN),
                "the config is DoRA (useDora), so expected a magnitude [3]");
        assertMessage(() -> new AdapterTensors("fc", a, b, Nd4j.ones(DataType.FLOAT, 4), dora, WeightLayout.OUT_IN),
                "lora_magnitude_vector: expected shape [3]", "[4]");
        AdapterTensors ok = new AdapterTensors("fc", a, b, null, r2, WeightLayout.OUT_IN);
        assertMessage(() -> PeftAdapterFiles.saver().adapterTensors("default", List.of(ok, ok)),
                "module 'fc' appears twice");
        AdapterTensors nan = new AdapterTensors("fc", a, b.dup().putScalar(0, Double.NaN), null, r2,
                WeightLayout.OUT_IN);
        assertMessage(() -> PeftAdapterFiles.saver().adapterTensors("default", List.of(nan)).save(dir, "default"),
                "module 'fc' lora_B: expected finite values");
        AdapterTensors badPath = new AdapterTensors("x..y", a, b, null, r2, WeightLayout.OUT_IN);
        assertMessage(() -> PeftAdapterFiles.saver().adapterTensors("default", List.of(badPath)).save(dir, "default"),
                "x..y");
        assertFalse(Files.exists(dir.resolve(PeftAdapterFiles.MODEL_FILE)), "nothing written");
        assertTrue(a.equals(gaussian(DataType.FLOAT, 1, 1, 2, 4)), "A never written");
    }

    private static void deleteTree(Path dir) throws IOException {
        try (java.util.stream.Stream<Path> paths = Files.walk(dir)) {
            for (Path p : paths.sorted(java.util.Comparator.reverseOrder()).toList()) {
                Files.delete(p);
            }
        }
    }

    private static void assertMessage(org.junit.jupiter.api.function.Executable call, String... parts) {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, call);
        for (String p : parts) {
            assertTrue(e.getMessage().contains(p), "expected '" + p + "' in: " + e.getMessage());
        }
    }
}
