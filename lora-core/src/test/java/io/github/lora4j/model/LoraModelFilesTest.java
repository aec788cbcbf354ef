package io.github.lora4j.model;

import static io.github.lora4j.TestData.assertBitwiseEquals;
import static io.github.lora4j.TestData.bits;
import static io.github.lora4j.TestData.gaussian;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.github.lora4j.LoraConfig;
import io.github.lora4j.LoraLinear;
import io.github.lora4j.io.PeftAdapterConfig;
import io.github.lora4j.io.PeftAdapterFiles;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;

/** Saving a model's adapter as PEFT files and loading it into a fresh model built from the same base weights. */
class LoraModelFilesTest {

    private static final int D = 8;

    /** Two blocks of q/k/v/o [D, D] from fixed seeds; each call returns new arrays with the same values. */
    private static LoraModel model() {
        LoraModel.Builder b = LoraModel.builder();
        long seed = 500;
        for (int layer = 0; layer < 2; layer++) {
            for (String p : new String[] {"q_proj", "k_proj", "v_proj", "o_proj"}) {
                b.linear("model.layers." + layer + ".self_attn." + p, gaussian(DataType.FLOAT, seed++, 0.4, D, D),
                        gaussian(DataType.FLOAT, seed++, 0.1, D));
            }
        }
        return b.build();
    }

    private static LoraModel trained(List<String> targets, long seed) {
        LoraModel m = model().applyLora(LoraConfig.builder().rank(2).alpha(4).build(), targets);
        for (LoraLinear l : m.loraModules().values()) {
            l.setAdapterWeights("default", gaussian(DataType.FLOAT, seed++, 0.3, 2, D), gaussian(DataType.FLOAT, seed++, 0.3, D, 2));
        }
        return m;
    }

    private static Map<String, long[]> snapshot(LoraModel m) {
        Map<String, long[]> s = new LinkedHashMap<>();
        for (String p : m.modulePaths()) {
            LoraLinear l = m.module(p);
            s.put(p + " W", bits(l.weight()));
            s.put(p + " adapters " + l.adapterNames() + " active " + l.activeAdapter(), new long[0]);
            for (String a : l.adapterNames()) {
                s.put(p + " " + a + " A", bits(l.loraA(a)));
                s.put(p + " " + a + " B", bits(l.loraB(a)));
            }
        }
        return s;
    }

    private static void assertSameState(Map<String, long[]> expected, Map<String, long[]> actual) {
        assertEquals(expected.keySet(), actual.keySet());
        expected.forEach((k, v) -> assertArrayEquals(v, actual.get(k), k));
    }

    @Test
    void aFreshModelWithTheLoadedAdapterComputesBitwiseTheSame(@TempDir Path dir) throws IOException {
        LoraModel saved = trained(List.of("q_proj", "v_proj"), 1);
        saved.save(dir, "default");
        assertTrue(Files.size(dir.resolve(PeftAdapterFiles.MODEL_FILE)) > 4L * 4 * 2 * 2 * D);

        LoraModel fresh = model();
        PeftAdapterConfig cfg = fresh.load(dir, "default");
        assertEquals(2, cfg.r());
        assertEquals(4.0, cfg.loraAlpha());
        assertEquals(Set.of("q_proj", "v_proj"), Set.copyOf(cfg.targetModules()));
        assertEquals(saved.loraModules().keySet(), fresh.loraModules().keySet());
        assertEquals("default", fresh.activeAdapter());
        assertEquals(saved.trainableParametersReport(), fresh.trainableParametersReport());
        INDArray x = gaussian(DataType.FLOAT, 77, 1, 5, D);
        for (String p : saved.modulePaths()) {
            assertBitwiseEquals(saved.forward(p, x), fresh.forward(p, x), p);
        }
    }

    @Test
    void aSecondAdapterLoadsBesideTheFirstAndActivatesOnRequest(@TempDir Path dir) throws IOException {
        LoraModel source = trained(List.of("q_proj", "v_proj"), 10);
        source.save(dir, "default");
        LoraModel target = trained(List.of("q_proj", "v_proj"), 50);
        target.load(dir, "imported");
        assertEquals(List.of("default", "imported"), target.adapterNames());
        assertEquals("default", target.activeAdapter(), "loading does not switch adapters");
        target.setActiveAdapter("imported");
        INDArray x = gaussian(DataType.FLOAT, 78, 1, 3, D);
        String q = "model.layers.1.self_attn.q_proj";
        assertBitwiseEquals(source.forward(q, x), target.forward(q, x), q);
    }

    @Test
    void aFileNamingAModuleTheModelLacksChangesNothing(@TempDir Path dir) throws IOException {
        LoraModel.Builder b = LoraModel.builder();
        b.linear("model.layers.0.self_attn.q_proj", gaussian(DataType.FLOAT, 1, 1, D, D), null);
        LoraModel small = b.build();
        trained(List.of("q_proj"), 20).save(dir, "default"); // names layers 0 and 1
        Map<String, long[]> before = snapshot(small);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> small.load(dir, "default"));
        assertTrue(e.getMessage().contains("model.layers.1.self_attn.q_proj"), e.getMessage());
        assertSameState(before, snapshot(small));
        assertTrue(small.loraModules().isEmpty());
    }

    @Test
    void aFileNotCoveringEveryTargetedModuleIsRefusedAndRolledBack(@TempDir Path dir) throws IOException {
        trained(List.of("q_proj"), 30).save(dir, "default");
        LoraModel wider = trained(List.of("q_proj", "v_proj"), 40);
        Map<String, long[]> before = snapshot(wider);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> wider.load(dir, "partial"));
        assertTrue(e.getMessage().contains("missing [model.layers.0.self_attn.v_proj, model.layers.1.self_attn.v_proj]"),
                e.getMessage());
        assertSameState(before, snapshot(wider));
    }

    @Test
    void savingNeedsLoraApplied(@TempDir Path dir) {
        assertThrows(IllegalStateException.class, () -> model().save(dir, "default"));
        assertFalse(Files.exists(dir.resolve(PeftAdapterFiles.MODEL_FILE)));
    }
}
