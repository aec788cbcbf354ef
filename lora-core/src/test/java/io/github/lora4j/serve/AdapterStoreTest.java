package io.github.lora4j.serve;

import static io.github.lora4j.TestData.bits;
import static io.github.lora4j.TestData.gaussian;
import static io.github.lora4j.serve.StoreFixture.L0;
import static io.github.lora4j.serve.StoreFixture.L1;
import static io.github.lora4j.serve.StoreFixture.twoLayers;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.github.lora4j.LoraConfig;
import io.github.lora4j.LoraLinear;
import io.github.lora4j.io.AdapterFormatException;
import io.github.lora4j.io.PeftAdapterFiles;
import io.github.lora4j.model.LoraModel;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.List;
import java.util.Set;
import java.util.TreeSet;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * The store's contract case by case: what register checks, sizes, pins, LRU eviction, unregistering under an open
 * batch, and every refusal (unknown name, missing, corrupt, hostile or misfit files, a budget below one adapter, a
 * batch above the budget, a nested batch that would wait for itself), each leaving the store and model as they were.
 */
class AdapterStoreTest {

    private static final StoreFixture F = new StoreFixture(6, 8, 4);

    @TempDir
    Path tmp;

    private Path adapter(String name, int rank, long seed) {
        Path dir = tmp.resolve(name);
        F.writeAdapter(dir, rank, seed);
        return dir;
    }

    /** A reference model holding the adapters loaded directly, each under its own name. */
    private static LoraModel reference(Path... dirs) throws IOException {
        LoraModel ref = F.model();
        for (Path d : dirs) {
            ref.load(d, d.getFileName().toString());
        }
        return ref;
    }

    private static INDArray input(int rows, long seed) {
        return gaussian(DataType.FLOAT, seed, 1.0, rows, F.in);
    }

    private static Set<String> modelAdapters(AdapterStore store) {
        return new TreeSet<>(store.model().adapterNames());
    }

    @Test
    void aBatchLoadsItsAdaptersAndGivesTheDirectlyLoadedModelsOutputBitForBit() throws Exception {
        Path a = adapter("a", 2, 100);
        Path b = adapter("b", 3, 200);
        LoraModel ref = reference(a, b);
        try (AdapterStore store = new AdapterStore(F.model(), 10 * F.bytes(3))) {
            store.register("a", a);
            store.register("b", b);
            assertEquals(Set.of("default"), modelAdapters(store), "register must not load anything");
            String[] rows = {"a", null, "b", "a", LoraLinear.BASE_MODEL};
            INDArray x = input(rows.length, 1);
            try (AdapterStore.Batch batch = store.batch(rows)) {
                assertEquals(List.of("a", "b"), batch.adapters());
                assertTrue(StoreFixture.sameOutput(twoLayers(ref, x, rows), twoLayers(batch, x)), "mixed batch output");
            }
            assertEquals(List.of("a", "b"), store.residentAdapters());
            assertEquals(F.bytes(2) + F.bytes(3), store.residentBytes());
            assertEquals(F.bytes(2), store.sizeOf("a").getAsLong());
            assertEquals(Set.of("a", "b", "default"), modelAdapters(store));
            AdapterStore.Stats s = store.stats();
            assertEquals(1, s.batches());
            assertEquals(0, s.hits());
            assertEquals(2, s.misses());
            assertEquals(3, s.rowMisses(), "base rows are no requests of an adapter");
            assertEquals(2, s.loads());
        }
    }

    @Test
    void theLeastRecentlyUsedUnpinnedAdapterIsEvictedFirst() throws Exception {
        Path a = adapter("a", 1, 1);
        Path b = adapter("b", 1, 2);
        Path c = adapter("c", 1, 3);
        LoraModel ref = reference(a, b, c);
        try (AdapterStore store = new AdapterStore(F.model(), 2 * F.bytes(1))) {
            for (Path p : List.of(a, b, c)) {
                store.register(p.getFileName().toString(), p);
            }
            INDArray x = input(1, 2);
            store.forward(L0, x, new String[] {"a"});
            store.forward(L0, x, new String[] {"b"});
            store.forward(L0, x, new String[] {"a"});          // a is now the most recently used
            assertEquals(List.of("b", "a"), store.residentAdapters());
            INDArray y = store.forward(L0, x, new String[] {"c"});
            assertEquals(List.of("a", "c"), store.residentAdapters(), "b was the least recently used");
            assertEquals(Set.of("a", "c", "default"), modelAdapters(store));
            assertArrayEquals(bits(ref.forward(L0, x, new String[] {"c"})), bits(y));
            try (AdapterStore.Batch pinned = store.batch(new String[] {"a"})) {
                store.forward(L0, x, new String[] {"b"});      // a is pinned: c goes although a is older
                assertEquals(List.of("a", "b"), store.residentAdapters());
                assertArrayEquals(bits(ref.forward(L0, x, new String[] {"a"})), bits(pinned.forward(L0, x)));
            }
            assertEquals(4, store.stats().loads());
            assertEquals(2, store.stats().evictions());
            assertEquals(2, store.stats().hits());
        }
    }

    @Test
    void registerChecksTheNameAndTheDirectoryButReadsNoFile() throws Exception {
        Path a = adapter("a", 1, 1);
        Path empty = Files.createDirectory(tmp.resolve("empty"));
        Path file = Files.writeString(tmp.resolve("file"), "x");
        try (AdapterStore store = new AdapterStore(F.model(), 1 << 20)) {
            store.register("a", a);
            store.register("empty", empty);                    // no file is read at register
            assertThrows(NullPointerException.class, () -> store.register(null, a));
            assertThrows(NullPointerException.class, () -> store.register("n", null));
            for (String bad : new String[] {"", "  ", LoraLinear.BASE_MODEL, StoreFiles.PROBE_NAME}) {
                IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> store.register(bad, a));
                assertTrue(e.getMessage().contains("expected a non-blank name"), e.getMessage());
            }
            IllegalArgumentException taken = assertThrows(IllegalArgumentException.class, () -> store.register("a", a));
            assertTrue(taken.getMessage().contains("already registered"), taken.getMessage());
            IllegalArgumentException model = assertThrows(IllegalArgumentException.class,
                    () -> store.register("default", a));
            assertTrue(model.getMessage().contains("already in the model and not the store's"), model.getMessage());
            IllegalArgumentException missing = assertThrows(IllegalArgumentException.class,
                    () -> store.register("m", tmp.resolve("nowhere")));
            assertTrue(missing.getMessage().contains("(missing)"), missing.getMessage());
            IllegalArgumentException notDir = assertThrows(IllegalArgumentException.class,
                    () -> store.register("f", file));
            assertTrue(notDir.getMessage().contains("(not a directory)"), notDir.getMessage());
            assertEquals(2, store.registeredCount());
            assertFalse(store.sizeOf("a").isPresent(), "sized only when a batch names it");
            AdapterStoreException e = assertThrows(AdapterStoreException.class,
                    () -> store.batch(new String[] {"a", "empty"}));
            assertEquals(Set.of("empty"), e.failures().keySet());
            assertInstanceOf(NoSuchFileException.class, e.failures().get("empty"));
            assertTrue(e.failures().get("empty").getMessage().contains("adapter 'empty'"), e.getMessage());
            assertEquals(Set.of("a", "default"), modelAdapters(store), "the batch's other adapter loaded");
            assertEquals(F.bytes(1), store.sizeOf("a").getAsLong());
            assertFalse(store.sizeOf("empty").isPresent());
        }
    }

    @Test
    void theConstructorRefusesModelsItCannotServe() {
        LoraModel plain = LoraModel.builder().linear(L0, gaussian(DataType.FLOAT, 1, 1, 4, 3), null).build();
        IllegalArgumentException none = assertThrows(IllegalArgumentException.class, () -> new AdapterStore(plain, 1));
        assertTrue(none.getMessage().contains("apply LoRA first"), none.getMessage());
        LoraModel withEmbedding = LoraModel.builder().embedding("emb", gaussian(DataType.FLOAT, 1, 1, 10, 4))
                .linear(L0, gaussian(DataType.FLOAT, 2, 1, 4, 4), null).build();
        withEmbedding.applyLora(LoraConfig.builder().rank(1).build(), List.of("emb", L0));
        IllegalArgumentException emb = assertThrows(IllegalArgumentException.class,
                () -> new AdapterStore(withEmbedding, 1));
        assertTrue(emb.getMessage().contains("LoRA embeddings [emb]"), emb.getMessage());
        IllegalArgumentException zero = assertThrows(IllegalArgumentException.class,
                () -> new AdapterStore(F.model(), 0));
        assertTrue(zero.getMessage().contains("got 0"), zero.getMessage());
    }

    @Test
    void anUnknownNameFailsOnlyItsRowsAndChangesNothing() throws Exception {
        Path a = adapter("a", 1, 1);
        try (AdapterStore store = new AdapterStore(F.model(), 1 << 20)) {
            store.register("a", a);
            AdapterStoreException e = assertThrows(AdapterStoreException.class,
                    () -> store.batch(new String[] {"a", "ghost", null, "ghost"}));
            assertEquals(Set.of("ghost"), e.failures().keySet());
            assertArrayEquals(new int[] {1, 3}, e.failedRows());
            assertTrue(e.getMessage().contains("'ghost': IllegalArgumentException: adapter 'ghost' is not registered"),
                    e.getMessage());
            assertTrue(e.getMessage().startsWith("1 of 2 adapters of the batch could not be served (2 rows)"),
                    e.getMessage());
            assertEquals(List.of("a"), store.residentAdapters(), "the known adapter loaded for the retry");
            assertEquals(1, store.stats().loads());
            assertEquals(Set.of("a", "default"), modelAdapters(store));
        }
    }

    @Test
    void aCorruptOrMisfitAdapterFailsWithItsNameAndCauseAndTheOthersStillLoad() throws Exception {
        Path good = adapter("good", 2, 1);
        Path nan = tmp.resolve("nan");
        F.writeNaN(nan, 2, 5);
        Path garbage = tmp.resolve("garbage");
        F.writeGarbage(garbage, 2, 6);
        Path misfit = tmp.resolve("misfit");
        F.writeMisfit(misfit, 2, 7);
        LoraModel ref = reference(good);
        try (AdapterStore store = new AdapterStore(F.model(), 1 << 20)) {
            store.register("good", good);
            store.register("nan", nan);
            store.register("garbage", garbage);
            store.register("misfit", misfit);
            // Sizing reads headers only: the garbage header and the misfit shapes are refused there, the NaN when
            // its tensors are read; "good" loads meanwhile.
            AdapterStoreException sized = assertThrows(AdapterStoreException.class,
                    () -> store.batch(new String[] {"nan", "good", "garbage", "misfit"}));
            assertEquals(List.of("nan", "garbage", "misfit"), List.copyOf(sized.failures().keySet()),
                    "all failures, in row order");
            assertArrayEquals(new int[] {0, 2, 3}, sized.failedRows());
            assertInstanceOf(AdapterFormatException.class, sized.failures().get("garbage"));
            assertTrue(sized.failures().get("garbage").getMessage().contains("adapter 'garbage' (" + garbage + ")"),
                    sized.failures().get("garbage").getMessage());
            IllegalArgumentException fit = assertInstanceOf(IllegalArgumentException.class,
                    sized.failures().get("misfit"));
            assertTrue(fit.getMessage().contains("adapter 'misfit'") && fit.getMessage().contains("does not fit")
                    && fit.getMessage().contains(L0), fit.getMessage());
            assertEquals(Set.of("default", "good"), modelAdapters(store));
            assertEquals(List.of("good"), store.residentAdapters());
            // Failures are not remembered: the NaN file is read again, and fails again.
            AdapterStoreException loaded = assertThrows(AdapterStoreException.class,
                    () -> store.batch(new String[] {"good", "nan"}));
            assertEquals(Set.of("nan"), loaded.failures().keySet());
            assertArrayEquals(new int[] {1}, loaded.failedRows());
            AdapterFormatException format = assertInstanceOf(AdapterFormatException.class,
                    loaded.failures().get("nan"));
            assertTrue(format.getMessage().contains("adapter 'nan' (" + nan + ")")
                    && format.getMessage().contains("NaN"), format.getMessage());
            assertEquals(List.of("good"), store.residentAdapters());
            assertEquals(Set.of("default", "good"), modelAdapters(store), "nothing of 'nan' is left in the model");
            assertEquals(2, store.stats().loadFailures());
            INDArray x = input(2, 3);
            try (AdapterStore.Batch batch = store.batch(new String[] {"good", null})) {
                assertTrue(StoreFixture.sameOutput(twoLayers(ref, x, new String[] {"good", null}), twoLayers(batch, x)), "output");
            }
            // Fixed on disk, the adapter loads on the next request: failures are not remembered.
            F.writeAdapter(nan, 2, 5);
            store.forward(L0, input(1, 4), new String[] {"nan"});
            assertTrue(store.residentAdapters().contains("nan"));
        }
    }

    @Test
    void hostileFilesAreRefusedPerAdapter() throws Exception {
        Path fifo = adapter("fifo", 1, 1);
        Path tensors = fifo.resolve(PeftAdapterFiles.MODEL_FILE);
        Files.delete(tensors);
        assertEquals(0, new ProcessBuilder("mkfifo", tensors.toString()).start().waitFor(), "mkfifo");
        Path noConfig = adapter("noconfig", 1, 2);
        Files.delete(noConfig.resolve(PeftAdapterFiles.CONFIG_FILE));
        Path modules = tmp.resolve("modules");
        LoraModel saver = LoraModel.builder()
                .linear(L0, gaussian(DataType.FLOAT, 1, 1, F.hidden, F.in), null)
                .linear(L1, gaussian(DataType.FLOAT, 2, 1, F.out, F.hidden), null)
                .linear("head", gaussian(DataType.FLOAT, 3, 1, 2, F.out), null).build();
        saver.applyLora(LoraConfig.builder().rank(1).build(), List.of(L0, L1));
        saver.setModuleToSave("head", gaussian(DataType.FLOAT, 5, 1, 2, F.out), null);
        saver.save(modules, "default");
        try (AdapterStore store = new AdapterStore(F.model(), 1 << 20)) {
            store.register("fifo", fifo);
            store.register("noconfig", noConfig);
            store.register("modules", modules);
            AdapterStoreException e = assertThrows(AdapterStoreException.class,
                    () -> store.batch(new String[] {"fifo", "noconfig", "modules"}));
            assertInstanceOf(AdapterFormatException.class, e.failures().get("fifo"));
            assertTrue(e.failures().get("fifo").getMessage().contains("regular file"), e.getMessage());
            assertInstanceOf(NoSuchFileException.class, e.failures().get("noconfig"));
            assertTrue(e.failures().get("modules").getMessage().contains("holds full tensors"), e.getMessage());
            assertEquals(Set.of("default"), modelAdapters(store));
        }
    }

    @Test
    void anAdapterNotCoveringEveryModuleIsRefused() throws Exception {
        Path partial = tmp.resolve("partial");
        LoraModel maker = LoraModel.builder()
                .linear(L0, gaussian(DataType.FLOAT, 1, 1, F.hidden, F.in), null)
                .linear(L1, gaussian(DataType.FLOAT, 2, 1, F.out, F.hidden), null).build();
        maker.applyLora(LoraConfig.builder().rank(1).build(), List.of(L0));
        maker.save(partial, "default");
        try (AdapterStore store = new AdapterStore(F.model(), 1 << 20)) {
            store.register("partial", partial);
            AdapterStoreException e = assertThrows(AdapterStoreException.class,
                    () -> store.batch(new String[] {"partial"}));
            String m = e.failures().get("partial").getMessage();
            assertTrue(m.contains("must cover every LoRA module") && m.contains("missing [" + L1 + "]"), m);
        }
    }

    @Test
    void aBudgetBelowOneAdapterIsRefusedNamingBothNumbers() throws Exception {
        Path a = adapter("a", 2, 1);
        long size = F.bytes(2);
        try (AdapterStore store = new AdapterStore(F.model(), size - 1)) {
            store.register("a", a);
            AdapterStoreException e = assertThrows(AdapterStoreException.class, () -> store.batch(new String[] {"a"}));
            String m = e.failures().get("a").getMessage();
            assertTrue(m.contains(String.format("%,d bytes", size)) && m.contains(String.format("%,d bytes", size - 1)),
                    m);
            assertEquals(Set.of("default"), modelAdapters(store));
            assertEquals(0, store.residentBytes());
        }
    }

    @Test
    void aBatchAboveTheBudgetIsRefusedWholeAndSmallerOnesStillRun() throws Exception {
        Path a = adapter("a", 2, 1);
        Path b = adapter("b", 2, 2);
        try (AdapterStore store = new AdapterStore(F.model(), F.bytes(3))) {
            store.register("a", a);
            store.register("b", b);
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> store.batch(new String[] {"a", "b"}));
            assertTrue(e.getMessage().contains("2 distinct adapters needing " + String.format("%,d", F.bytes(4)))
                    && e.getMessage().contains(String.format("%,d bytes", F.bytes(3))), e.getMessage());
            assertEquals(List.of(), store.residentAdapters());
            store.forward(L0, input(1, 1), new String[] {"a"});
            store.forward(L0, input(1, 1), new String[] {"b"});
            assertEquals(List.of("b"), store.residentAdapters());
        }
    }

    @Test
    void anUnregisteredAdapterServesItsOpenBatchThenLeaves() throws Exception {
        Path a = adapter("a", 2, 1);
        Path a2 = adapter("a2", 3, 9);
        LoraModel ref = reference(a, a2);
        INDArray x = input(3, 5);
        String[] rows = {"a", null, "a"};
        try (AdapterStore store = new AdapterStore(F.model(), 1 << 20)) {
            store.register("a", a);
            AdapterStore.Batch open = store.batch(rows);
            store.unregister("a");
            assertFalse(store.isRegistered("a"));
            AdapterStoreException later = assertThrows(AdapterStoreException.class,
                    () -> store.batch(new String[] {"a"}));
            assertTrue(later.getMessage().contains("not registered"), later.getMessage());
            assertTrue(StoreFixture.sameOutput(twoLayers(ref, x, rows), twoLayers(open, x)), "the open batch finishes");
            assertTrue(modelAdapters(store).contains("a"));
            // Registered again under the same name: the new one waits for the old one to leave. This thread holds
            // the open batch, so it is told so instead of waiting for itself.
            store.register("a", a2);
            IllegalStateException self = assertThrows(IllegalStateException.class,
                    () -> store.batch(new String[] {"a"}));
            assertTrue(self.getMessage().contains("close the open batch first"), self.getMessage());
            open.close();
            open.close();                                      // closing twice does nothing
            IllegalStateException closed = assertThrows(IllegalStateException.class, () -> open.forward(L0, x));
            assertTrue(closed.getMessage().contains("closed"), closed.getMessage());
            assertEquals(Set.of("default"), modelAdapters(store), "the old 'a' left with its last batch");
            try (AdapterStore.Batch fresh = store.batch(rows)) {
                String[] refRows = {"a2", null, "a2"};
                assertTrue(StoreFixture.sameOutput(twoLayers(ref, x, refRows), twoLayers(fresh, x)), "the new version");
            }
            assertThrows(IllegalArgumentException.class, () -> store.unregister("ghost"));
        }
    }

    @Test
    void aNestedBatchThatFitsRunsAndOneThatWouldWaitIsRefused() throws Exception {
        Path a = adapter("a", 2, 1);
        Path b = adapter("b", 1, 2);
        Path c = adapter("c", 2, 3);
        try (AdapterStore store = new AdapterStore(F.model(), F.bytes(3))) {
            store.register("a", a);
            store.register("b", b);
            store.register("c", c);
            try (AdapterStore.Batch outer = store.batch(new String[] {"a"})) {
                store.forward(L0, input(2, 1), new String[] {"b", "a"});
                IllegalStateException e = assertThrows(IllegalStateException.class,
                        () -> store.batch(new String[] {"c"}));
                assertTrue(e.getMessage().contains("close the open batch first"), e.getMessage());
                assertEquals(List.of("a", "b"), store.residentAdapters(), "the refusal pinned and evicted nothing");
                assertEquals(1, outer.adapters().size());
            }
            store.forward(L0, input(1, 1), new String[] {"c"});
            assertEquals(List.of("b", "c"), store.residentAdapters(), "a was the least recently used");
        }
    }

    @Test
    void closingTheStoreRemovesItsAdaptersAndRefusesNewWork() throws Exception {
        Path a = adapter("a", 1, 1);
        Path b = adapter("b", 1, 2);
        AdapterStore store = new AdapterStore(F.model(), 1 << 20);
        store.register("a", a);
        store.register("b", b);
        store.forward(L0, input(1, 1), new String[] {"a"});
        AdapterStore.Batch open = store.batch(new String[] {"b"});
        store.close();
        assertEquals(Set.of("b", "default"), modelAdapters(store), "the open batch keeps b");
        open.forward(L0, input(1, 2));
        open.close();
        assertEquals(Set.of("default"), modelAdapters(store));
        assertThrows(IllegalStateException.class, () -> store.batch(new String[] {null}));
        assertThrows(IllegalStateException.class, () -> store.register("c", a));
        store.close();
    }

    @Test
    void aBatchOfBaseRowsOnlyPinsNothing() throws Exception {
        try (AdapterStore store = new AdapterStore(F.model(), 1)) {
            INDArray x = input(2, 1);
            INDArray y = store.forward(L0, x, new String[] {null, LoraLinear.BASE_MODEL});
            try (var off = store.model().adaptersDisabled()) {
                assertArrayEquals(bits(store.model().forward(L0, x)), bits(y));
            }
            assertThrows(NullPointerException.class, () -> store.batch(null));
            assertEquals(List.of(), store.residentAdapters());
        }
    }

    @Test
    void anAdapterDeletedFromTheModelBehindTheStoresBackIsForgottenByEvictionAndItsBytesFreed() throws Exception {
        Path a = adapter("a", 1, 1);
        Path b = adapter("b", 1, 2);
        Path c = adapter("c", 1, 3);
        LoraModel ref = reference(a, b, c);
        try (AdapterStore store = new AdapterStore(F.model(), 2 * F.bytes(1))) {
            for (Path p : List.of(a, b, c)) {
                store.register(p.getFileName().toString(), p);
            }
            INDArray x = input(1, 2);
            store.forward(L0, x, new String[] {"a"});
            store.forward(L0, x, new String[] {"b"});
            store.model().deleteAdapter("a");                    // not the store's way: unregister is
            INDArray y = store.forward(L0, x, new String[] {"c"}); // needs room: a is the LRU victim, already gone
            assertArrayEquals(bits(ref.forward(L0, x, new String[] {"c"})), bits(y));
            assertEquals(List.of("b", "c"), store.residentAdapters(), "a is no longer counted resident");
            assertEquals(2 * F.bytes(1), store.residentBytes(), "a's bytes were freed, c's reserved");
            assertEquals(Set.of("b", "c", "default"), modelAdapters(store));
            assertEquals(0, store.stats().evictions(), "the store removed nothing itself");
            // Still registered: the next batch that names it loads it again (b, now the LRU, makes room).
            INDArray ya = store.forward(L0, x, new String[] {"a"});
            assertArrayEquals(bits(ref.forward(L0, x, new String[] {"a"})), bits(ya));
            assertEquals(List.of("c", "a"), store.residentAdapters());
            assertEquals(2 * F.bytes(1), store.residentBytes());
        }
    }

    @Test
    void anAdapterDeletedFromSomeModulesIsDeletedFromTheOthersWhenEvicted() throws Exception {
        Path a = adapter("a", 1, 1);
        Path b = adapter("b", 1, 2);
        try (AdapterStore store = new AdapterStore(F.model(), F.bytes(1))) {
            store.register("a", a);
            store.register("b", b);
            store.forward(L0, input(1, 1), new String[] {"a"});
            store.model().loraModules().get(L1).deleteAdapter("a");
            store.forward(L0, input(1, 1), new String[] {"b"});
            assertEquals(List.of("b"), store.residentAdapters());
            assertEquals(Set.of("b", "default"), modelAdapters(store));
            assertFalse(store.model().loraModules().get(L0).adapterNames().contains("a"), "no half of 'a' is left");
            assertEquals(F.bytes(1), store.residentBytes());
        }
    }

    @Test
    void aBatchWhoseAdapterWasDeletedFromTheModelFailsNamingItAndTheNextBatchLoadsItAgain() throws Exception {
        Path a = adapter("a", 2, 1);
        Path b = adapter("b", 1, 2);
        LoraModel ref = reference(a, b);
        String[] rows = {"a", "b", null};
        INDArray x = input(rows.length, 3);
        try (AdapterStore store = new AdapterStore(F.model(), 1 << 20)) {
            store.register("a", a);
            store.register("b", b);
            try (AdapterStore.Batch batch = store.batch(rows)) {
                store.model().deleteAdapter("a");
                IllegalStateException e = assertThrows(IllegalStateException.class, () -> batch.forward(L0, x));
                assertTrue(e.getMessage().contains("[a]") && e.getMessage().contains("unregister"), e.getMessage());
                assertInstanceOf(IllegalArgumentException.class, e.getCause(), "the model's refusal is the cause");
                assertEquals(List.of("b"), store.residentAdapters(), "a is forgotten at once");
                assertEquals(F.bytes(1), store.residentBytes(), "a's bytes are freed");
                assertTrue(store.isRegistered("a"), "still registered");
            }
            try (AdapterStore.Batch again = store.batch(rows)) {
                assertTrue(StoreFixture.sameOutput(twoLayers(ref, x, rows), twoLayers(again, x)), "a loaded again");
            }
            assertEquals(List.of("b", "a"), store.residentAdapters());
            assertEquals(F.bytes(1) + F.bytes(2), store.residentBytes());
            assertEquals(3, store.stats().loads());
            // A forward failing for another reason is not mistaken for a lost adapter.
            try (AdapterStore.Batch batch = store.batch(rows)) {
                IllegalArgumentException wrong = assertThrows(IllegalArgumentException.class,
                        () -> batch.forward(L0, input(2, 1)));
                assertTrue(wrong.getMessage().contains("3 rows") || wrong.getMessage().contains("row"),
                        wrong.getMessage());
            }
            assertEquals(List.of("a", "b"), store.residentAdapters(), "both used again, nothing forgotten");
        }
    }
}
