package io.github.lora4j.model;

import static io.github.lora4j.TestData.assertBitwiseEquals;
import static io.github.lora4j.TestData.bits;
import static io.github.lora4j.TestData.gaussian;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.github.lora4j.LoraConfig;
import io.github.lora4j.LoraEmbedding;
import io.github.lora4j.LoraLinear;
import io.github.lora4j.MergeMode;
import io.github.lora4j.io.PeftAdapter;
import io.github.lora4j.io.PeftAdapterFiles;
import io.github.lora4j.io.PeftAdapterLayout.Kind;
import java.io.IOException;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.indexing.NDArrayIndex;

/** LoraModel with embeddings, modules_to_save copies, mixed ranks, and its refusal of tied weights. */
class LoraModelPeftKindsTest {

    @TempDir
    Path tmp;

    @Test
    void weightsThatShareMemoryAreRefusedNamingBothModules() {
        INDArray tied = gaussian(DataType.FLOAT, 1, 1, 10, 4);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> LoraModel.builder()
                .embedding("wte", tied).linear("lm_head", tied, null).build());
        assertTrue(e.getMessage().contains("modules 'wte' and 'lm_head' share weight memory (tied weights"),
                e.getMessage());
        // Overlapping views of one array are tied too; disjoint row blocks of one array are not.
        INDArray big = gaussian(DataType.FLOAT, 2, 1, 8, 4);
        assertThrows(IllegalArgumentException.class, () -> LoraModel.builder()
                .linear("a", big.get(NDArrayIndex.interval(0, 5), NDArrayIndex.all()), null)
                .linear("b", big.get(NDArrayIndex.interval(4, 8), NDArrayIndex.all()), null).build());
        LoraModel ok = LoraModel.builder()
                .linear("a", big.get(NDArrayIndex.interval(0, 4), NDArrayIndex.all()), null)
                .linear("b", big.get(NDArrayIndex.interval(4, 8), NDArrayIndex.all()), null).build();
        assertEquals(List.of("a", "b"), ok.modulePaths());
    }

    @Test
    void tiedWeightsAreRefusedByTheModelAndLooseLayersOverOneWByTheSecondMerge() {
        // The attack of issues 15 and 29: one W wrapped by two loose layers; merging and unmerging both left W wrong.
        INDArray w = gaussian(DataType.FLOAT, 3, 1, 16, 16);
        long[] before = bits(w);
        LoraLinear one = LoraLinear.wrap(w, null, LoraConfig.builder().rank(4).alpha(64).build());
        LoraLinear two = LoraLinear.wrap(w, null, LoraConfig.builder().rank(4).alpha(64).build());
        one.setAdapterWeights("default", gaussian(DataType.FLOAT, 4, 1, 4, 16), gaussian(DataType.FLOAT, 5, 1, 16, 4));
        two.setAdapterWeights("default", gaussian(DataType.FLOAT, 6, 1, 4, 16), gaussian(DataType.FLOAT, 7, 1, 16, 4));
        one.merge(MergeMode.EXACT);
        long[] merged = bits(w);
        IllegalStateException e = assertThrows(IllegalStateException.class, () -> two.merge(MergeMode.EXACT));
        assertTrue(e.getMessage().contains("shares memory"), e.getMessage());
        assertArrayEquals(merged, bits(w), "the refused merge left W as it was");
        one.unmerge();
        assertThrows(IllegalStateException.class, two::unmerge, "nothing is merged into the second layer");
        assertArrayEquals(before, bits(w), "W bitwise the original");
        assertThrows(IllegalArgumentException.class, () -> LoraModel.builder().linear("q", w, null)
                .linear("k", w, null).build());
    }

    @Test
    void applyLoraTargetsEmbeddingsWithPeftsInitAndMergesThemWithTheRest() {
        INDArray table = gaussian(DataType.FLOAT, 1, 1, 30, 8);
        long[] tableBits = bits(table);
        LoraModel model = LoraModel.builder().embedding("model.embed_tokens", table)
                .linear("model.layers.0.q_proj", gaussian(DataType.FLOAT, 2, 1, 8, 8), null).build();
        model.applyLora(LoraConfig.builder().rank(2).build(), Pattern.compile(".*(embed_tokens|q_proj)"));
        assertEquals(List.of("model.embed_tokens"), List.copyOf(model.loraEmbeddings().keySet()));
        LoraEmbedding e = model.embedding("model.embed_tokens");
        assertEquals(0.0, e.adapter("default").a().amaxNumber().doubleValue(), "embedding A = 0 (PEFT)");
        INDArray ids = Nd4j.createFromArray(3L, 29L);
        assertBitwiseEquals(table.getRows(3, 29), model.forward("model.embed_tokens", ids), "fresh adapter: plain lookup");
        e.setAdapterWeights("default", gaussian(DataType.FLOAT, 3, 1, 2, 30), e.adapter("default").b());
        INDArray unmerged = model.forward("model.embed_tokens", ids);
        model.merge();
        assertTrue(e.isMerged());
        assertTrue(model.forward("model.embed_tokens", ids).sub(unmerged).amaxNumber().doubleValue() < 1e-5);
        model.unmerge();
        assertArrayEquals(tableBits, bits(table), "exact unmerge of the table");
        assertEquals(30 * 8 + 8 * 8 + 2 * (30 + 8) + 2 * (8 + 8), model.totalParameterCount());
    }

    @Test
    void aModuleToSaveReplacesWeightAndBiasUntilDisabledOrUnloaded() {
        INDArray w = gaussian(DataType.FLOAT, 1, 1, 3, 8);
        INDArray b = gaussian(DataType.FLOAT, 2, 1, 3);
        long[] wBits = bits(w);
        LoraModel model = LoraModel.builder().linear("q", gaussian(DataType.FLOAT, 3, 1, 8, 8), null)
                .linear("score", w, b).build();
        model.applyLora(LoraConfig.builder().rank(2).build(), List.of("q"));
        INDArray w2 = gaussian(DataType.FLOAT, 4, 1, 3, 8);
        model.setModuleToSave("score", w2, null);
        assertTrue(model.module("score").weight() == w2);
        assertBitwiseEquals(b, model.module("score").bias().reshape(3), "a missing bias keeps the original's");
        assertEquals(2 * 16 + 3 * 8 + 3, model.trainableParameterCount(), "PEFT counts the copy as trainable");
        model.setModulesToSaveEnabled(false);
        assertTrue(model.module("score").weight() == w);
        model.setModulesToSaveEnabled(true);
        model.unloadModulesToSave();
        assertTrue(model.module("score").weight() == w);
        assertArrayEquals(wBits, bits(w));
        IllegalArgumentException lora = assertThrows(IllegalArgumentException.class,
                () -> model.setModuleToSave("q", gaussian(DataType.FLOAT, 5, 1, 8, 8), null));
        assertTrue(lora.getMessage().contains("carries LoRA adapters"), lora.getMessage());
        IllegalArgumentException shape = assertThrows(IllegalArgumentException.class,
                () -> model.setModuleToSave("score", gaussian(DataType.FLOAT, 5, 1, 8, 3), null));
        assertTrue(shape.getMessage().contains("weight: expected shape [3, 8], got [8, 3]"), shape.getMessage());
        assertThrows(IllegalArgumentException.class, () -> model.setModuleToSave("score", w, null),
                "a copy sharing the original's memory is no copy");
    }

    @Test
    void mixedRanksAndModulesToSaveRoundTripThroughPeftFiles() throws IOException {
        LoraModel a = mixed(1);
        a.setBaseModelNameOrPath("org/tiny-model");
        a.save(tmp, "default");
        PeftAdapter file = PeftAdapterFiles.read(tmp);
        assertEquals(Map.of("layers.1.v_proj", 4), file.config().rankPattern());
        assertEquals(Map.of("layers.1.v_proj", 12.0), file.config().alphaPattern());
        assertEquals(List.of("score"), file.config().modulesToSave());
        assertEquals(List.of("q_proj", "v_proj", "wte"), file.config().targetModules());
        assertEquals(Kind.EMBEDDING, file.kind("wte"));

        LoraModel fresh = base();
        fresh.load(tmp, "default");
        assertEquals("org/tiny-model", fresh.baseModelNameOrPath());
        assertEquals(List.of("score"), fresh.modulesToSave());
        assertEquals(4, fresh.module("layers.1.v_proj").adapter("default").rank());
        assertEquals(12.0, fresh.module("layers.1.v_proj").adapter("default").config().alpha());
        INDArray x = gaussian(DataType.FLOAT, 50, 1, 3, 8);
        for (String p : List.of("layers.0.q_proj", "layers.1.v_proj", "score")) {
            assertBitwiseEquals(a.forward(p, x), fresh.forward(p, x), p);
        }
        INDArray ids = Nd4j.createFromArray(0L, 11L, 5L);
        assertBitwiseEquals(a.forward("wte", ids), fresh.forward("wte", ids), "wte");
        assertEquals(a.trainableParametersReport(), fresh.trainableParametersReport());
    }

    /** The base model: an embedding, q/v projections in two layers, a classifier head; same values for any call. */
    private static LoraModel base() {
        return LoraModel.builder().embedding("wte", gaussian(DataType.FLOAT, 1, 1, 12, 8))
                .linear("layers.0.q_proj", gaussian(DataType.FLOAT, 2, 1, 8, 8), null)
                .linear("layers.1.v_proj", gaussian(DataType.FLOAT, 3, 1, 8, 8), null)
                .linear("score", gaussian(DataType.FLOAT, 4, 1, 2, 8), gaussian(DataType.FLOAT, 5, 1, 2)).build();
    }

    /** {@link #base()} with q at r = 2, alpha 8; v at r = 4, alpha 12; wte at r = 2; a trained score head. */
    private static LoraModel mixed(long seed) throws IOException {
        Map<String, LoraLinear> linears = Map.of(
                "layers.0.q_proj", LoraLinear.wrap(gaussian(DataType.FLOAT, 2, 1, 8, 8), null,
                        LoraConfig.builder().rank(2).alpha(8).build()),
                "layers.1.v_proj", LoraLinear.wrap(gaussian(DataType.FLOAT, 3, 1, 8, 8), null,
                        LoraConfig.builder().rank(4).alpha(12).build()));
        for (LoraLinear l : linears.values()) {
            int r = l.adapter("default").rank();
            l.setAdapterWeights("default", gaussian(DataType.FLOAT, seed++, 0.3, r, 8),
                    gaussian(DataType.FLOAT, seed++, 0.3, 8, r));
        }
        LoraEmbedding wte = LoraEmbedding.wrap(gaussian(DataType.FLOAT, 1, 1, 12, 8),
                LoraConfig.builder().rank(2).alpha(8).build());
        wte.setAdapterWeights("default", gaussian(DataType.FLOAT, seed++, 0.3, 2, 12), gaussian(DataType.FLOAT, seed, 0.3, 8, 2));
        Path dir = java.nio.file.Files.createTempDirectory("lora4j-mixed");
        PeftAdapterFiles.saver().linears(linears).embeddings(Map.of("wte", wte)).save(dir, "default");
        LoraModel m = base();
        m.load(dir, "default");
        m.setModuleToSave("score", gaussian(DataType.FLOAT, seed + 7, 1, 2, 8), gaussian(DataType.FLOAT, seed + 8, 1, 2));
        m.setBaseModelNameOrPath(null);
        return m;
    }
}
