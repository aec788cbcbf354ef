package io.github.lora4j.serve;

import static io.github.lora4j.TestData.gaussian;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.github.lora4j.LoraConfig;
import io.github.lora4j.io.AdapterFormatException;
import io.github.lora4j.model.LoraModel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * The Java snippets of docs/adapter-store.md, run: each region between {@code // docs/adapter-store.md: <name>} and
 * {@code // end} is one of the guide's code blocks; lora-examples' {@code DocSnippetsTest} checks that the guide shows
 * them as they are here.
 */
class AdapterStoreGuideTest {

    private static final StoreFixture F = new StoreFixture(16, 12, 8);

    @TempDir
    Path tmp;

    @Test
    void serveABatchOfTenants() throws Exception {
        Path adapters = tmp.resolve("adapters");
        F.writeAdapter(adapters.resolve("tenant-a"), 2, 1);
        F.writeAdapter(adapters.resolve("tenant-b"), 4, 7);
        LoraModel model = LoraModel.builder()
                .linear("layers.0.proj", gaussian(DataType.FLOAT, 11, 0.5, 12, 16),
                        gaussian(DataType.FLOAT, 12, 0.5, 12))
                .linear("layers.1.proj", gaussian(DataType.FLOAT, 13, 0.5, 8, 12), null)
                .build();
        INDArray x = gaussian(DataType.FLOAT, 3, 1, 3, 16);
        INDArray y;
        // docs/adapter-store.md: serve
        model.applyLora(LoraConfig.builder().build(), List.of("layers.0.proj", "layers.1.proj"));
        model.eval();                                                   // mixed batches run in eval mode
        try (AdapterStore store = new AdapterStore(model, 64L << 20)) { // at most 64 MiB of A and B resident
            for (Path dir : Files.newDirectoryStream(adapters)) {
                store.register(dir.getFileName().toString(), dir);      // no file is read yet
            }
            String[] rows = {"tenant-a", "tenant-b", null};             // one adapter per row; null: the base
            try (AdapterStore.Batch batch = store.batch(rows)) {        // loads what is missing, pins it
                y = batch.forward("layers.1.proj", batch.forward("layers.0.proj", x));
            }                                                           // unpinned: may be evicted from now on
            System.out.println(store.stats().hitRate() + " " + store.residentAdapters());
        }
        // end
        LoraModel ref = F.model();
        ref.load(adapters.resolve("tenant-a"), "tenant-a");
        ref.load(adapters.resolve("tenant-b"), "tenant-b");
        String[] rows = {"tenant-a", "tenant-b", null};
        INDArray expected = StoreFixture.twoLayers(ref, x, rows);
        assertTrue(expected.equalsWithEps(y, 1e-6), "the store's batch gives the directly loaded model's output");
        assertEquals(List.of("default"), new ArrayList<>(model.adapterNames()), "closing the store unloads them");
    }

    @Test
    void failuresNameTheirAdapterAndRows() throws Exception {
        Path good = tmp.resolve("good");
        Path broken = tmp.resolve("broken");
        F.writeAdapter(good, 2, 1);
        F.writeGarbage(broken, 2, 3);
        INDArray x = gaussian(DataType.FLOAT, 4, 1, 3, 16);
        List<String> answered = new ArrayList<>();
        try (AdapterStore store = new AdapterStore(F.model(), F.bytes(2) * 4)) {
            store.register("good", good);
            store.register("broken", broken);
            String[] rows = {"good", "broken", "ghost"};
            // docs/adapter-store.md: failures
            try (AdapterStore.Batch batch = store.batch(rows)) {
                batch.forward(StoreFixture.L0, x);
            } catch (AdapterStoreException e) {
                for (int row : e.failedRows()) {                // answer these rows with their cause ...
                    answered.add(row + ": " + e.failures().get(rows[row]).getMessage());
                }
                // ... and run the others again as a new batch: "good" loaded and stays resident
            }
            // end
            assertEquals(2, answered.size(), answered.toString());
            assertTrue(answered.get(0).startsWith("1: ") && answered.get(1).startsWith("2: "), answered.toString());
            assertTrue(answered.get(1).contains("not registered"), answered.toString());
            assertTrue(store.residentAdapters().contains("good"));
            AdapterStoreException again = org.junit.jupiter.api.Assertions.assertThrows(AdapterStoreException.class,
                    () -> store.batch(new String[] {"broken"}));
            assertInstanceOf(AdapterFormatException.class, again.failures().get("broken"));
        }
    }
}
