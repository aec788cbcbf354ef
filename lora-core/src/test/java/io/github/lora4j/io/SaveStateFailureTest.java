package io.github.lora4j.io;

import static io.github.lora4j.TestData.assertBitwiseEquals;
import static io.github.lora4j.TestData.gaussian;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import io.github.lora4j.LoraConfig;
import io.github.lora4j.LoraLinear;
import io.github.lora4j.train.LoraTrainer;
import java.io.IOException;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.learning.config.Adam;

/**
 * Issue 29, item 2: {@link LoraTrainer#saveState} writes through {@link SafeFiles#write}, the adapter files' machinery,
 * so a failed rename puts the old files back and the previous checkpoint stays loadable. Each rename is made to fail
 * here by injection ({@link SafeFiles#OPS}, this thread only), as a revoked permission or {@code chattr +i} would
 * (that reproducer is {@code TrainerStateRegressionTest}, where the platform allows it).
 */
class SaveStateFailureTest {

    @TempDir
    Path dir;

    @AfterEach
    void renamesAsUsual() {
        SafeFiles.OPS.remove();
    }

    private static PeftAdapterFiles.FileOps failingOnto(String name) {
        return (from, to) -> {
            if (to.getFileName().toString().equals(name)) {
                throw new IOException("simulated failure of the rename onto " + name);
            }
            PeftAdapterFiles.FileOps.ATOMIC.move(from, to);
        };
    }

    private static LoraLinear layer() {
        LoraLinear l = io.github.lora4j.TestData.trainedLayer(DataType.FLOAT, 3, 6, 5,
                LoraConfig.builder().rank(2).alpha(4).build(), false);
        l.adapter("default").gradA().assign(gaussian(DataType.FLOAT, 4, 0.1, 2, 6));
        l.adapter("default").gradB().assign(gaussian(DataType.FLOAT, 5, 0.1, 5, 2));
        return l;
    }

    @Test
    void aFailedRenameOfEitherFileLeavesThePreviousCheckpointAsItWas() throws IOException {
        LoraLinear l = layer();
        LoraTrainer t = LoraTrainer.builder().updater(new Adam(1e-2)).build(l);
        t.step();
        t.saveState(dir);
        Map<String, INDArray> saved = SafeFiles.readSafetensors(dir.resolve(LoraTrainer.STATE_TENSORS_FILE), (m, d) -> { });
        Map<String, byte[]> before = IoTestData.files(dir);
        l.adapter("default").gradA().assign(gaussian(DataType.FLOAT, 6, 0.1, 2, 6));
        t.step();
        for (String name : List.of(LoraTrainer.STATE_CONFIG_FILE, LoraTrainer.STATE_TENSORS_FILE)) {
            SafeFiles.OPS.set(failingOnto(name));
            IOException e = assertThrows(IOException.class, () -> t.saveState(dir));
            assertEquals("simulated failure of the rename onto " + name, e.getMessage());
            IoTestData.assertSameFiles(before, dir);
            SafeFiles.OPS.remove();
            // The previous checkpoint loads, with its state: saved again elsewhere, it holds the same tensors.
            Path again = dir.resolveSibling(dir.getFileName() + "-again-" + name);
            LoraTrainer.loadState(dir, List.of(l)).saveState(again);
            Map<String, INDArray> back = SafeFiles.readSafetensors(again.resolve(LoraTrainer.STATE_TENSORS_FILE),
                    (m, d) -> { });
            assertEquals(saved.keySet(), back.keySet());
            saved.forEach((k, v) -> assertBitwiseEquals(v, back.get(k), k + " after a failed rename onto " + name));
            IoTestData.deleteTree(again);
        }
    }

    @Test
    void aFailedFirstSaveLeavesNoTrainerFile() throws IOException {
        LoraLinear l = layer();
        LoraTrainer t = LoraTrainer.builder().updater(new Adam(1e-2)).build(l);
        t.step();
        SafeFiles.OPS.set(failingOnto(LoraTrainer.STATE_CONFIG_FILE));
        assertThrows(IOException.class, () -> t.saveState(dir));
        assertEquals(java.util.Set.of(SafeFiles.LOCK_FILE), IoTestData.files(dir).keySet());
    }
}
