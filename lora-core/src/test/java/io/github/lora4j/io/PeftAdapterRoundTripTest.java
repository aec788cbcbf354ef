package io.github.lora4j.io;

import static io.github.lora4j.TestData.assertBitwiseEquals;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import io.github.lora4j.LoraConfig;
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
import java.util.TreeSet;
import net.jqwik.api.Arbitraries;
import net.jqwik.api.Arbitrary;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.Provide;
import net.jqwik.api.constraints.IntRange;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/** Save then load is the identity on A, B and the config, for every file type. */
class PeftAdapterRoundTripTest {

    @Provide
    Arbitrary<DataType> layerTypes() {
        return Arbitraries.of(DataType.FLOAT, DataType.DOUBLE);
    }

    @Provide
    Arbitrary<DataType> halfTypes() {
        return Arbitraries.of(DataType.FLOAT16, DataType.BFLOAT16);
    }

    @Provide
    Arbitrary<WeightLayout> layouts() {
        return Arbitraries.of(WeightLayout.values());
    }

    @Property(tries = 60)
    void saveThenLoadGivesBitwiseEqualWeightsAndEqualConfig(@ForAll("layerTypes") DataType type,
                                                            @ForAll("layouts") WeightLayout layout,
                                                            @ForAll @IntRange(min = 1, max = 3) int moduleCount,
                                                            @ForAll @IntRange(min = 1, max = 8) int rank,
                                                            @ForAll @IntRange(min = 1, max = 64) int alpha,
                                                            @ForAll boolean rsLora,
                                                            @ForAll long seed) throws IOException {
        // F32 from FLOAT layers and F64 from DOUBLE layers are exact.
        roundTrip(type, layout, moduleCount, rank, alpha, rsLora, seed, type, null);
    }

    @Property(tries = 40)
    void halfAndBfloat16RoundTripValuesTheyRepresent(@ForAll("halfTypes") DataType fileType,
                                                     @ForAll("layerTypes") DataType type,
                                                     @ForAll("layouts") WeightLayout layout,
                                                     @ForAll @IntRange(min = 1, max = 3) int moduleCount,
                                                     @ForAll @IntRange(min = 1, max = 8) int rank,
                                                     @ForAll long seed) throws IOException {
        roundTrip(type, layout, moduleCount, rank, 16, false, seed, fileType, fileType);
    }

    private static void roundTrip(DataType type, WeightLayout layout, int moduleCount, int rank, int alpha,
                                  boolean rsLora, long seed, DataType fileType, DataType representableIn)
            throws IOException {
        SplittableRandom rng = new SplittableRandom(seed);
        Map<String, LoraLinear> model = new LinkedHashMap<>();
        Map<String, LoraLinear> fresh = new LinkedHashMap<>();
        String[] kinds = {"q_proj", "k_proj", "v_proj"};
        int r = rank;
        List<int[]> shapes = new ArrayList<>();
        for (int i = 0; i < moduleCount; i++) {
            int in = 1 + rng.nextInt(12);
            int out = 1 + rng.nextInt(12);
            shapes.add(new int[] {in, out});
            r = Math.min(r, Math.min(in, out));
        }
        LoraConfig cfg = LoraConfig.builder().rank(r).alpha(alpha).rsLora(rsLora).dropout(rng.nextInt(5) / 10.0)
                .build();
        TreeSet<String> targets = new TreeSet<>();
        for (int i = 0; i < moduleCount; i++) {
            String module = "model.layers." + rng.nextInt(3) + ".self_attn." + kinds[i];
            int in = shapes.get(i)[0];
            int out = shapes.get(i)[1];
            LoraLinear layer = IoTestData.layer(type, seed + i, in, out, cfg, layout);
            if (representableIn != null) {
                layer.setAdapterWeights("default", representable(type, representableIn, rng, r, in),
                        representable(type, representableIn, rng, out, r));
            }
            model.put(module, layer);
            INDArray w = layout == WeightLayout.OUT_IN ? Nd4j.zeros(type, out, in) : Nd4j.zeros(type, in, out);
            fresh.put(module, LoraLinear.base(w, null, layout));
            targets.add(kinds[i]);
        }
        Path dir = Files.createTempDirectory("lora4j-roundtrip");
        Path again = Files.createTempDirectory("lora4j-roundtrip");
        try {
            PeftAdapterFiles.save(dir, model, "default", fileType);
            PeftAdapterConfig loaded = PeftAdapterFiles.load(dir, fresh, "loaded");

            assertEquals(PeftAdapterConfig.from(cfg, new ArrayList<>(targets), layout == WeightLayout.IN_OUT), loaded);
            assertEquals(cfg.toBuilder().init(io.github.lora4j.LoraInit.ZERO).seed(LoraConfig.DEFAULT_SEED).build(),
                    fresh.values().iterator().next().adapter("loaded").config());
            for (Map.Entry<String, LoraLinear> m : model.entrySet()) {
                LoraLinear copy = fresh.get(m.getKey());
                assertBitwiseEquals(m.getValue().loraA("default"), copy.loraA("loaded"), m.getKey() + " A");
                assertBitwiseEquals(m.getValue().loraB("default"), copy.loraB("loaded"), m.getKey() + " B");
            }
            // Saving what was loaded reproduces both files byte for byte.
            // The provenance names the original init and seed, not the loaded adapter's ZERO.
            PeftAdapterFiles.saver().linears(fresh).fileType(fileType).provenance(cfg).save(again, "loaded");
            for (String f : List.of(PeftAdapterFiles.MODEL_FILE, PeftAdapterFiles.CONFIG_FILE)) {
                assertArrayEquals(Files.readAllBytes(dir.resolve(f)), Files.readAllBytes(again.resolve(f)), f);
            }
        } finally {
            IoTestData.deleteTree(dir);
            IoTestData.deleteTree(again);
        }
    }

    /** Random finite values that {@code fileType} (F16 or BF16) represents exactly, as a {@code type} array. */
    private static INDArray representable(DataType type, DataType fileType, SplittableRandom rng, int rows, int cols) {
        double[] v = new double[rows * cols];
        for (int i = 0; i < v.length; i++) {
            float f;
            do {
                int bits = rng.nextInt(0x10000);
                f = fileType == DataType.FLOAT16 ? FloatFormats.halfToFloat(bits) : FloatFormats.bfloat16ToFloat(bits);
            } while (!Float.isFinite(f));
            v[i] = f;
        }
        return Nd4j.createFromArray(v).castTo(type).reshape('c', rows, cols);
    }

}
