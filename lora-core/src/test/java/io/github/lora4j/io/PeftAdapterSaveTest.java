package io.github.lora4j.io;

import static io.github.lora4j.io.IoTestData.Q;
import static io.github.lora4j.io.IoTestData.V;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import io.github.lora4j.Lora4j;
import io.github.lora4j.LoraConfig;
import io.github.lora4j.LoraInit;
import io.github.lora4j.LoraLinear;
import io.github.lora4j.WeightLayout;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermission;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.List;
import java.util.Map;
import java.util.Set;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.factory.Nd4j;

/** What a save leaves on disk when it succeeds, and when it fails at each step. */
class PeftAdapterSaveTest {

    @TempDir
    Path tmp;

    /** Renames atomically, except onto the config file, which fails as a full disk or a revoked permission would. */
    private static final PeftAdapterFiles.FileOps CONFIG_RENAME_FAILS = (from, to) -> {
        if (to.getFileName().toString().equals(PeftAdapterFiles.CONFIG_FILE)) {
            throw new IOException("simulated failure of the second rename");
        }
        PeftAdapterFiles.FileOps.ATOMIC.move(from, to);
    };

    @Test
    void aFailedSecondRenamePutsTheOldModelFileBackSoTheFilesStayAPair() throws IOException {
        PeftAdapterFiles.save(tmp, IoTestData.model(DataType.FLOAT, 1), "default");
        Map<String, byte[]> before = IoTestData.files(tmp);
        // Same rank, other weights and alpha: before the fix read accepted new A/B with the old lora_alpha.
        Map<String, LoraLinear> other = IoTestData.model(DataType.FLOAT, 2);
        IOException e = assertThrows(IOException.class, () -> PeftAdapterFiles.saver().linears(other)
                .save(tmp, "default", CONFIG_RENAME_FAILS));
        assertEquals("simulated failure of the second rename", e.getMessage());
        IoTestData.assertSameFiles(before, tmp);
    }

    @Test
    void whenPuttingTheOldModelBackFailsTooTheMessageSaysSoAndTheOldFileIsKept() throws IOException {
        PeftAdapterFiles.save(tmp, IoTestData.model(DataType.FLOAT, 1), "default");
        byte[] oldModel = Files.readAllBytes(tmp.resolve(PeftAdapterFiles.MODEL_FILE));
        PeftAdapterFiles.FileOps alsoRestoreFails = (from, to) -> {
            if (from.getFileName().toString().endsWith(SafeFiles.BACKUP_SUFFIX)) {
                throw new IOException("simulated failure of the put-back");
            }
            CONFIG_RENAME_FAILS.move(from, to);
        };
        IOException e = assertThrows(IOException.class, () -> PeftAdapterFiles.saver()
                .linears(IoTestData.model(DataType.FLOAT, 2)).save(tmp, "default", alsoRestoreFails));
        assertTrue(e.getMessage().contains("could not be put back") && e.getMessage().contains("save again"),
                e.getMessage());
        assertEquals("simulated failure of the second rename", e.getCause().getMessage());
        List<Path> kept;
        try (java.util.stream.Stream<Path> s = Files.list(tmp)) {
            kept = s.filter(p -> p.getFileName().toString().endsWith(SafeFiles.BACKUP_SUFFIX)).collect(
                    java.util.stream.Collectors.toList());
        }
        assertEquals(1, kept.size(), "the backup is kept: it is the only copy of the old model file");
        assertTrue(e.getMessage().contains(kept.get(0).toString()), e.getMessage());
        org.junit.jupiter.api.Assertions.assertArrayEquals(oldModel, Files.readAllBytes(kept.get(0)));
        PeftAdapterFiles.save(tmp, IoTestData.model(DataType.FLOAT, 3), "default");
        assertEquals(Set.of(PeftAdapterFiles.MODEL_FILE, PeftAdapterFiles.CONFIG_FILE, SafeFiles.LOCK_FILE),
                IoTestData.files(tmp).keySet(), "the next save removes it");
    }

    @Test
    void aFailedSecondRenameIntoAnEmptyDirectoryLeavesNoModelFile() throws IOException {
        assertThrows(IOException.class, () -> PeftAdapterFiles.saver().linears(IoTestData.model(DataType.FLOAT, 1))
                .save(tmp, "default", CONFIG_RENAME_FAILS));
        // Only the (empty) lock file of the save stays.
        assertEquals(Set.of(SafeFiles.LOCK_FILE), IoTestData.files(tmp).keySet());
        assertEquals(0, IoTestData.files(tmp).get(SafeFiles.LOCK_FILE).length);
    }

    @Test
    void savingNanOrInfinityIsRefusedNamingTheModuleAndKeepsTheFiles() throws IOException {
        PeftAdapterFiles.save(tmp, IoTestData.model(DataType.FLOAT, 1), "default");
        Map<String, byte[]> before = IoTestData.files(tmp);
        for (float bad : new float[] {Float.NaN, Float.POSITIVE_INFINITY, Float.NEGATIVE_INFINITY}) {
            Map<String, LoraLinear> model = IoTestData.model(DataType.FLOAT, 2);
            // updateTrainable is how an optimizer step that overflowed would leave A.
            model.get(V).updateTrainable(ad -> ad.a().putScalar(3, bad));
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> PeftAdapterFiles.save(tmp, model, "default"));
            assertTrue(e.getMessage().contains("module '" + V + "' lora_A: expected finite values, found NaN or infinity"),
                    e.getMessage());
            IoTestData.assertSameFiles(before, tmp);
        }
        IllegalArgumentException full = assertThrows(IllegalArgumentException.class, () -> PeftAdapterFiles.saver()
                .linears(IoTestData.model(DataType.FLOAT, 2))
                .modulesToSave(Map.of("score", Map.of("weight", Nd4j.createFromArray(1f, Float.NaN))))
                .save(tmp, "default"));
        assertTrue(full.getMessage().contains("modules_to_save module 'score' weight: expected finite"), full.getMessage());
        IoTestData.assertSameFiles(before, tmp);
    }

    private static int umask() throws IOException, InterruptedException {
        Process p = new ProcessBuilder("sh", "-c", "umask").start();
        String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.US_ASCII).trim();
        assertEquals(0, p.waitFor());
        return Integer.parseInt(out, 8);
    }

    private static Set<PosixFilePermission> mode(int bits) {
        StringBuilder s = new StringBuilder();
        String rwx = "rwx";
        for (int i = 8; i >= 0; i--) {
            s.append((bits >> i & 1) == 1 ? rwx.charAt(2 - i % 3) : '-');
        }
        return PosixFilePermissions.fromString(s.toString());
    }

    @Test
    void newFilesGetTheUmasksModeAndReplacedFilesKeepTheirs() throws Exception {
        assumeTrue(tmp.getFileSystem().supportedFileAttributeViews().contains("posix"), "not a POSIX file system");
        Set<PosixFilePermission> expected = mode(0666 & ~umask());
        PeftAdapterFiles.save(tmp, IoTestData.model(DataType.FLOAT, 1), "default");
        for (String f : List.of(PeftAdapterFiles.MODEL_FILE, PeftAdapterFiles.CONFIG_FILE)) {
            assertEquals(expected, Files.getPosixFilePermissions(tmp.resolve(f)), f + " of a new save (was 0600)");
        }
        Set<PosixFilePermission> chosen = PosixFilePermissions.fromString("rw-r-----");
        Set<PosixFilePermission> other = PosixFilePermissions.fromString("rw-rw-r--");
        Files.setPosixFilePermissions(tmp.resolve(PeftAdapterFiles.MODEL_FILE), chosen);
        Files.setPosixFilePermissions(tmp.resolve(PeftAdapterFiles.CONFIG_FILE), other);
        PeftAdapterFiles.save(tmp, IoTestData.model(DataType.FLOAT, 2), "default");
        assertEquals(chosen, Files.getPosixFilePermissions(tmp.resolve(PeftAdapterFiles.MODEL_FILE)));
        assertEquals(other, Files.getPosixFilePermissions(tmp.resolve(PeftAdapterFiles.CONFIG_FILE)));
    }

    @Test
    void temporaryFilesOfKilledSavesAreCleanedUpByTheNextSave() throws IOException {
        // What a save killed midway leaves: this version's names, 0.2 snapshots' fixed names and the random names of
        // earlier versions.
        for (String stale : List.of(".adapter_model.safetensors.9f3c0a11b2d4e6f8.lora4j-tmp",
                ".adapter_config.json.9f3c0a11b2d4e6f8.lora4j-tmp", ".adapter_model.safetensors.9f3c0a11b2d4e6f8.lora4j-old",
                ".adapter_model.safetensors.lora4j-tmp", ".adapter_config.json.lora4j-tmp",
                ".adapter_model.safetensors.lora4j-old", ".adapter_model.safetensors.5163902417.tmp",
                ".adapter_config.json.77.tmp")) {
            Files.writeString(tmp.resolve(stale), "half-written");
        }
        Files.writeString(tmp.resolve("README.md"), "not ours");
        PeftAdapterFiles.save(tmp, IoTestData.model(DataType.FLOAT, 1), "default");
        assertEquals(Set.of(PeftAdapterFiles.MODEL_FILE, PeftAdapterFiles.CONFIG_FILE, "README.md", SafeFiles.LOCK_FILE),
                IoTestData.files(tmp).keySet());
        assertEquals(List.of(Q, V), PeftAdapterFiles.read(tmp).modules());
    }

    @Test
    void theMetadataCarriesProvenanceBesideFormatPt() throws IOException {
        LoraConfig cfg = LoraConfig.builder().rank(2).alpha(4).init(LoraInit.GAUSSIAN).seed(1234).build();
        Map<String, LoraLinear> model = Map.of("transformer.h.0.attn.c_attn",
                IoTestData.layer(DataType.FLOAT, 1, 6, 18, cfg, WeightLayout.IN_OUT));
        PeftAdapterFiles.saver().linears(model).baseModelNameOrPath("gpt2").save(tmp, "default");
        PeftAdapter a = PeftAdapterFiles.read(tmp);
        assertEquals("pt", a.metadata().get("format"));
        assertEquals("GAUSSIAN", a.metadata().get("lora4j.init"));
        assertEquals("1234", a.metadata().get("lora4j.seed"));
        assertEquals("IN_OUT", a.metadata().get("lora4j.layout"));
        assertEquals(Lora4j.version(), a.metadata().get("lora4j.version"));
        assertTrue(Lora4j.version().matches("dev|\\d+\\.\\d+\\.\\d+.*"), Lora4j.version());
        assertEquals("gpt2", a.config().baseModelNameOrPath().orElseThrow());
        assertTrue(a.config().fanInFanOut());
    }

    @Test
    void anAlphaWhoseScalingOverflowsAFloatLayerIsRefusedOnLoadAndChangesNothing() throws IOException {
        // lora_alpha 1e39 with r = 1: s = 1e39, infinite as a float, so a fresh B = 0 would output NaN (0 * inf).
        String header = "{\"base_model.model.m.lora_A.weight\":{\"dtype\":\"F32\",\"shape\":[1,2],\"data_offsets\":[0,8]},"
                + "\"base_model.model.m.lora_B.weight\":{\"dtype\":\"F32\",\"shape\":[2,1],\"data_offsets\":[8,16]}}";
        Path dir = IoTestData.writeDir(tmp.resolve("alpha"), "{\"peft_type\": \"LORA\", \"r\": 1, \"lora_alpha\": 1e39}",
                IoTestData.file(header, IoTestData.f32(1, 2, 0, 0)));
        Map<String, LoraLinear> floats = Map.of("m", LoraLinear.base(Nd4j.zeros(DataType.FLOAT, 2, 2), null,
                WeightLayout.OUT_IN));
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> PeftAdapterFiles.load(dir, floats, "x"));
        assertTrue(e.getMessage().contains("module 'm': lora_alpha 1.0E39 and r 1 give the scaling 1.0E39, which is "
                + "not finite in the layer's FLOAT"), e.getMessage());
        assertTrue(floats.get("m").adapterNames().isEmpty());
        Map<String, LoraLinear> doubles = Map.of("m", LoraLinear.base(Nd4j.zeros(DataType.DOUBLE, 2, 2), null,
                WeightLayout.OUT_IN));
        PeftAdapterFiles.load(dir, doubles, "x");
        assertEquals(1e39, doubles.get("m").adapter("x").scaling());
    }
}
