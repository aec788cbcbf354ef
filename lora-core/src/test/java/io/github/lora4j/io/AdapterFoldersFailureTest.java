package io.github.lora4j.io;

import static io.github.lora4j.TestData.gaussian;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;

import io.github.lora4j.LoraConfig;
import io.github.lora4j.LoraLinear;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.nd4j.linalg.api.buffer.DataType;

/**
 * {@link PeftAdapterFiles.Saver#saveAll}: a rename that fails while the folders are being replaced (injected through
 * {@link SafeFiles#OPS}, this thread only) puts back the folders replaced before it, so the folder holds the previous
 * save, and a subfolder the failed save created is gone.
 */
class AdapterFoldersFailureTest {

    @TempDir
    Path tmp;

    @AfterEach
    void renamesAsUsual() {
        SafeFiles.OPS.remove();
    }

    /** Two layers with adapters default, chat and sql, A and B drawn from {@code seed}. */
    private static Map<String, LoraLinear> layers(long seed) {
        Map<String, LoraLinear> m = new java.util.LinkedHashMap<>();
        m.put("q", LoraLinear.wrap(gaussian(DataType.FLOAT, 1, 1, 5, 6), null, LoraConfig.builder().rank(2).build()));
        m.put("v", LoraLinear.wrap(gaussian(DataType.FLOAT, 2, 1, 3, 6), null, LoraConfig.builder().rank(2).build()));
        for (LoraLinear l : m.values()) {
            for (String name : List.of("chat", "sql")) {
                l.addAdapter(name, LoraConfig.builder().rank(3).build());
            }
            for (String name : l.adapterNames()) {
                int r = l.adapter(name).rank();
                l.setAdapterWeights(name, gaussian(DataType.FLOAT, seed++, 1, r, 6), gaussian(DataType.FLOAT, seed++, 1, l.outFeatures(), r));
            }
        }
        return m;
    }

    private static Map<String, String> tree(Path dir) throws IOException {
        return io.github.lora4j.TestData.fileTree(dir);
    }

    @Test
    void aRenameFailingOnTheLastFolderPutsBackTheFoldersReplacedBeforeIt() throws IOException {
        Path dir = tmp.resolve("adapters");
        PeftAdapterFiles.saver().linears(layers(10)).saveAll(dir, List.of("default", "chat", "sql"));
        Map<String, String> before = tree(dir);
        Path failing = dir.resolve("sql").resolve(PeftAdapterFiles.CONFIG_FILE);
        SafeFiles.OPS.set((from, to) -> {
            if (to.equals(failing)) {
                throw new IOException("simulated failure of the rename onto " + to);
            }
            PeftAdapterFiles.FileOps.ATOMIC.move(from, to);
        });
        IOException e = assertThrows(IOException.class,
                () -> PeftAdapterFiles.saver().linears(layers(50)).saveAll(dir, List.of("default", "chat", "sql")));
        assertEquals("simulated failure of the rename onto " + failing, e.getMessage());
        assertEquals(before, tree(dir), "default and chat put back, sql as it was");
    }

    @Test
    void aSubfolderTheFailedSaveCreatedIsRemoved() throws IOException {
        Path dir = tmp.resolve("adapters");
        PeftAdapterFiles.saver().linears(layers(10)).saveAll(dir, List.of("default"));
        Map<String, String> before = tree(dir);
        Path failing = dir.resolve("sql").resolve(PeftAdapterFiles.MODEL_FILE);
        SafeFiles.OPS.set((from, to) -> {
            if (to.equals(failing)) {
                throw new IOException("simulated failure");
            }
            PeftAdapterFiles.FileOps.ATOMIC.move(from, to);
        });
        assertThrows(IOException.class,
                () -> PeftAdapterFiles.saver().linears(layers(50)).saveAll(dir, List.of("default", "chat", "sql")));
        assertEquals(before, tree(dir), "chat/ and sql/ did not exist before, and do not now");
        assertFalse(Files.exists(dir.resolve("chat")));
    }

    @Test
    void aFolderThatDidNotExistIsNotLeftBehind() {
        Path dir = tmp.resolve("new");
        SafeFiles.OPS.set((from, to) -> {
            if (to.getParent().getFileName().toString().equals("chat") && !to.toString().contains(".lora4j-staging")) {
                throw new IOException("simulated failure");
            }
            PeftAdapterFiles.FileOps.ATOMIC.move(from, to);
        });
        assertThrows(IOException.class,
                () -> PeftAdapterFiles.saver().linears(layers(50)).saveAll(dir, List.of("default", "chat")));
        assertFalse(Files.exists(dir));
    }
}
