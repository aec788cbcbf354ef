package io.github.lora4j.model;

import static io.github.lora4j.TestData.assertBitwiseEquals;
import static io.github.lora4j.TestData.gaussian;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.github.lora4j.LoraAdapter;
import io.github.lora4j.LoraConfig;
import io.github.lora4j.LoraLinear;
import io.github.lora4j.io.AdapterFormatException;
import io.github.lora4j.io.PeftAdapterFiles;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/**
 * Several adapters in one folder, as PEFT's {@code save_pretrained} writes them (issue 30): {@code default} at the
 * top, every other adapter in a subfolder named after it; {@link LoraModel#save(Path)} and {@link LoraModel#load(Path)}.
 */
class MultiAdapterFolderTest {

    @TempDir
    Path tmp;

    /** q [6 -> 6], v [6 -> 4] and an embedding tok [12, 4]. */
    private static LoraModel base() {
        return LoraModel.builder()
                .embedding("tok", gaussian(DataType.FLOAT, 1, 1, 12, 4))
                .linear("layers.0.q_proj", gaussian(DataType.FLOAT, 2, 0.5, 6, 6), gaussian(DataType.FLOAT, 3, 0.1, 6))
                .linear("layers.0.v_proj", gaussian(DataType.FLOAT, 4, 0.5, 4, 6), null)
                .build();
    }

    /** Non-zero A and B for adapter {@code name} on every module. */
    private static void randomize(LoraModel m, String name, long seed) {
        for (LoraLinear l : m.loraModules().values()) {
            int r = l.adapter(name).rank();
            l.setAdapterWeights(name, gaussian(DataType.FLOAT, seed++, 0.5, r, l.inFeatures()),
                    gaussian(DataType.FLOAT, seed++, 0.5, l.outFeatures(), r));
        }
        m.loraEmbeddings().values().forEach(e -> {
            int r = e.adapter(name).rank();
            e.setAdapterWeights(name, gaussian(DataType.FLOAT, 77, 0.5, r, 12), gaussian(DataType.FLOAT, 78, 0.5, 4, r));
        });
    }

    /** Three adapters: default (r = 4), chat (r = 8, above min(in, out) of every module) and sql (r = 2). */
    private static LoraModel threeAdapters() {
        LoraModel model = base().applyLora(LoraConfig.builder().rank(4).alpha(8).build(), List.of("q_proj", "v_proj", "tok"));
        model.addAdapter("chat", LoraConfig.builder().rank(8).alpha(4).build());
        model.addAdapter("sql", LoraConfig.builder().rank(2).alpha(16).build());
        randomize(model, "default", 10);
        randomize(model, "chat", 20);
        randomize(model, "sql", 30);
        return model.setTaskType("CAUSAL_LM");
    }

    private static Map<String, String> tree(Path dir) throws IOException {
        return io.github.lora4j.TestData.fileTree(dir);
    }

    @Test
    void everyAdapterIsSavedInPeftsLayoutAndLoadsBackBitForBit() throws IOException {
        LoraModel model = threeAdapters();
        Path dir = tmp.resolve("adapters");
        // docs/peft-parity.md: multi-adapter
        model.save(dir);                                    // default at the top, chat/ and sql/ beside it
        Map<String, Path> there = PeftAdapterFiles.adapterFolders(dir);   // {default=dir, chat=dir/chat, sql=dir/sql}

        LoraModel fresh = base();
        List<String> loaded = fresh.load(dir);               // [default, chat, sql]; default is active
        fresh.setActiveAdapter("sql");
        // end
        assertEquals(List.of("default", "chat", "sql"), List.copyOf(there.keySet()));
        assertEquals(Map.of("default", dir, "chat", dir.resolve("chat"), "sql", dir.resolve("sql")), there);
        assertTrue(Files.exists(dir.resolve(PeftAdapterFiles.CONFIG_FILE)) && Files.exists(dir.resolve("sql")
                .resolve(PeftAdapterFiles.MODEL_FILE)));
        assertEquals(8, PeftAdapterFiles.read(dir.resolve("chat")).config().r());
        assertEquals("CAUSAL_LM", PeftAdapterFiles.read(dir.resolve("sql")).config().taskType().orElseThrow());
        assertFalse(Files.list(dir).anyMatch(p -> p.getFileName().toString().startsWith(".lora4j-staging")),
                "no staging folder left");

        assertEquals(List.of("default", "chat", "sql"), loaded);
        assertEquals(List.of("default", "chat", "sql"), fresh.adapterNames());
        assertEquals("CAUSAL_LM", fresh.taskType());
        INDArray x = gaussian(DataType.FLOAT, 50, 1, 3, 6);
        INDArray ids = Nd4j.createFromArray(0L, 11L, 5L);
        for (String name : List.of("default", "chat", "sql")) {
            model.setActiveAdapter(name);
            fresh.setActiveAdapter(name);
            for (String p : List.of("layers.0.q_proj", "layers.0.v_proj")) {
                LoraAdapter a = model.module(p).adapter(name);
                LoraAdapter b = fresh.module(p).adapter(name);
                assertEquals(a.rank(), b.rank(), p + " " + name);
                assertBitwiseEquals(a.a(), b.a(), p + " " + name + " A");
                assertBitwiseEquals(a.b(), b.b(), p + " " + name + " B");
                assertBitwiseEquals(model.forward(p, x), fresh.forward(p, x), p + " " + name + " output");
            }
            assertBitwiseEquals(model.forward("tok", ids), fresh.forward("tok", ids), "tok " + name);
        }
    }

    @Test
    void doraAdaptersKeepTheirMagnitudeInAFolderOfSeveral() throws IOException {
        LoraModel model = LoraModel.builder()
                .linear("q", gaussian(DataType.DOUBLE, 1, 0.5, 5, 7), null).build()
                .applyLora(LoraConfig.builder().rank(3).build(), List.of("q"));
        model.addAdapter("dora", LoraConfig.builder().rank(2).useDora(true).build());
        LoraLinear q = model.module("q");
        q.setAdapterWeights("dora", gaussian(DataType.DOUBLE, 5, 0.5, 2, 7), gaussian(DataType.DOUBLE, 6, 0.5, 5, 2),
                gaussian(DataType.DOUBLE, 7, 1, 5).add(2));
        model.save(tmp);
        assertTrue(PeftAdapterFiles.read(tmp.resolve("dora")).config().useDora());
        assertFalse(PeftAdapterFiles.read(tmp).config().useDora());

        LoraModel fresh = LoraModel.builder().linear("q", gaussian(DataType.DOUBLE, 1, 0.5, 5, 7), null).build();
        fresh.load(tmp);
        // F32 file: the magnitude as the file holds it
        assertBitwiseEquals(q.adapter("dora").magnitude().castTo(DataType.FLOAT).castTo(DataType.DOUBLE),
                fresh.module("q").adapter("dora").magnitude(), "DoRA magnitude");
        assertTrue(fresh.module("q").adapter("dora").isDora());
    }

    @Test
    void adapterNamesThatAreNotFolderNamesAreRefusedAndNothingIsWritten() throws IOException {
        for (String bad : List.of("../x", "/tmp/evil", "a/b", "a\\b", ".hidden", "..", "c:x", "adapter_config.json",
                "tab\there")) {
            LoraModel model = base().applyLora(LoraConfig.builder().rank(2).build(), List.of("q_proj"));
            model.addAdapter(bad, LoraConfig.builder().rank(2).build());
            Path dir = tmp.resolve("out");
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> model.save(dir), bad);
            assertTrue(e.getMessage().contains("expected a name that can be a subfolder"), e.getMessage());
            assertFalse(Files.exists(dir), bad + ": the folder was not even created");
            assertFalse(Files.exists(tmp.resolve("x")) || Files.exists(Path.of("/tmp/evil")), bad + ": nothing escaped");
        }
    }

    @Test
    void aSaveThatFailsOnOneAdapterLeavesTheFolderAsItWas() throws IOException {
        Path dir = tmp.resolve("adapters");
        threeAdapters().save(dir);
        Map<String, String> before = tree(dir);

        LoraModel model = threeAdapters();
        model.addAdapter("zzz", LoraConfig.builder().rank(2).build());
        randomize(model, "zzz", 40);
        model.module("layers.0.v_proj").adapter("zzz").b().putScalar(0, 0, Float.NaN);   // saved last: refused
        randomize(model, "default", 90);                                                // would change the top
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> model.save(dir));
        assertTrue(e.getMessage().contains("NaN") || e.getMessage().contains("finite"), e.getMessage());
        assertEquals(before, tree(dir), "every file and folder as before");
    }

    @Test
    void aLoadThatFailsOnOneAdapterLeavesTheModelAsItWas() throws IOException {
        Path dir = tmp.resolve("adapters");
        threeAdapters().save(dir);
        // sql/ replaced by an adapter of another model: v_proj 6 -> 5, which this model's v_proj (6 -> 4) is not
        LoraModel other = LoraModel.builder()
                .embedding("tok", gaussian(DataType.FLOAT, 1, 1, 12, 4))
                .linear("layers.0.q_proj", gaussian(DataType.FLOAT, 2, 0.5, 6, 6), null)
                .linear("layers.0.v_proj", gaussian(DataType.FLOAT, 4, 0.5, 5, 6), null).build()
                .applyLora(LoraConfig.builder().rank(2).build(), List.of("q_proj", "v_proj", "tok"));
        other.save(dir.resolve("sql"), "default");

        LoraModel fresh = base();
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> fresh.load(dir));
        assertTrue(e.getMessage().contains("v_proj"), e.getMessage());
        assertTrue(fresh.loraModules().isEmpty() && fresh.loraEmbeddings().isEmpty(), "no module targeted");
        assertTrue(fresh.module("layers.0.q_proj").adapterNames().isEmpty(), "default and chat were removed again");
        assertTrue(fresh.embedding("tok").adapterNames().isEmpty());
        assertTrue(fresh.targetModules().isEmpty());
        assertNull(fresh.taskType());
        // still a fresh model: LoRA applies as on any other
        fresh.applyLora(LoraConfig.builder().rank(2).build(), List.of("q_proj"));
        assertEquals(List.of("default"), fresh.adapterNames());

        LoraModel applied = base().applyLora(LoraConfig.builder().rank(2).build(), List.of("q_proj", "v_proj", "tok"));
        assertThrows(IllegalArgumentException.class, () -> applied.load(dir), "names taken: default");
        assertEquals(List.of("default"), applied.adapterNames());
    }

    @Test
    void hostileFoldersAreRefusedByName() throws IOException {
        Path dir = tmp.resolve("adapters");
        threeAdapters().save(dir);
        Files.createDirectories(dir.resolve("default"));
        Files.copy(dir.resolve(PeftAdapterFiles.CONFIG_FILE), dir.resolve("default").resolve(PeftAdapterFiles.CONFIG_FILE));
        AdapterFormatException e = assertThrows(AdapterFormatException.class, () -> PeftAdapterFiles.adapterFolders(dir));
        assertTrue(e.getMessage().contains("PEFT writes adapter 'default' at the top"), e.getMessage());

        Path many = Files.createDirectories(tmp.resolve("many"));
        for (int i = 0; i <= 4096; i++) {
            Files.createFile(many.resolve("f" + i));
        }
        e = assertThrows(AdapterFormatException.class, () -> PeftAdapterFiles.adapterFolders(many));
        assertTrue(e.getMessage().contains("expected at most 4096 entries"), e.getMessage());

        Path linked = Files.createDirectories(tmp.resolve("linked"));
        Files.createSymbolicLink(linked.resolve("elsewhere"), dir.resolve("chat"));
        assertTrue(PeftAdapterFiles.adapterFolders(linked).isEmpty(), "a symbolic link is not followed");
        IllegalArgumentException none = assertThrows(IllegalArgumentException.class, () -> base().load(linked));
        assertTrue(none.getMessage().contains("found none"), none.getMessage());
    }
}
