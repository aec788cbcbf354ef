package io.github.lora4j.io;

import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import io.github.lora4j.LoraLinear;
import io.github.lora4j.WeightLayout;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.factory.Nd4j;

/**
 * Directories an attacker (or an unlucky file system) prepares: FIFOs, device files behind symbolic links, a
 * tensor-count bomb, a sparse file declaring a 600 MB tensor. Each must be refused in bounded time and memory.
 * The bounds are enforced, not measured: every test has a {@link Timeout} on a separate thread (a blocked
 * {@code open} of a FIFO cannot hang the build), and Surefire runs this class alone in a JVM with
 * {@code -Xmx256m} (see lora-core/pom.xml), where reading the declared 600 MB, a gigabyte of tiny arrays, or
 * {@code /dev/zero} to its end would fail with {@code OutOfMemoryError} instead of the expected refusal.
 */
@Timeout(value = 20, threadMode = Timeout.ThreadMode.SEPARATE_THREAD)
class HostileFileTest {

    private static final String CONFIG = "{\"peft_type\": \"LORA\", \"r\": 2, \"lora_alpha\": 4, \"target_modules\": [\"m\"]}";

    @TempDir
    Path tmp;

    /** A valid model file for module m: A [2, 4], B [4, 2]. */
    private static byte[] validModel() {
        String header = "{\"base_model.model.m.lora_A.weight\":{\"dtype\":\"F32\",\"shape\":[2,4],\"data_offsets\":[0,32]},"
                + "\"base_model.model.m.lora_B.weight\":{\"dtype\":\"F32\",\"shape\":[4,2],\"data_offsets\":[32,64]}}";
        return IoTestData.file(header, new byte[64]);
    }

    private static Map<String, LoraLinear> model() {
        return Map.of("m", LoraLinear.base(Nd4j.zeros(DataType.FLOAT, 4, 4), null, WeightLayout.OUT_IN));
    }

    private static boolean mkfifo(Path p) throws InterruptedException {
        try {
            Process proc = new ProcessBuilder("mkfifo", p.toString()).redirectErrorStream(true).start();
            return proc.waitFor() == 0 && Files.exists(p);
        } catch (IOException e) {
            System.out.println("HostileFileTest: mkfifo is not available here (" + e.getMessage()
                    + "); the FIFO case is skipped");
            return false;
        }
    }

    private static void assertRefused(Path dir, String... fragments) {
        AdapterFormatException e = assertThrows(AdapterFormatException.class, () -> PeftAdapterFiles.read(dir));
        for (String f : fragments) {
            assertTrue(e.getMessage().contains(f), "message should contain '" + f + "': " + e.getMessage());
        }
        Map<String, LoraLinear> m = model();
        assertThrows(AdapterFormatException.class, () -> PeftAdapterFiles.load(dir, m, "x"));
        assertTrue(m.get("m").adapterNames().isEmpty());
    }

    @Test
    void aFifoAsEitherFileIsRefusedWithoutBlocking() throws Exception {
        Path cfgFifo = tmp.resolve("cfg");
        Files.createDirectories(cfgFifo);
        boolean available = mkfifo(cfgFifo.resolve(PeftAdapterFiles.CONFIG_FILE));
        assumeTrue(available, "mkfifo is not available on this system");
        Files.write(cfgFifo.resolve(PeftAdapterFiles.MODEL_FILE), validModel());
        assertRefused(cfgFifo, "adapter_config.json: expected a regular file, got a special file");

        Path modelFifo = tmp.resolve("model");
        Files.createDirectories(modelFifo);
        Files.writeString(modelFifo.resolve(PeftAdapterFiles.CONFIG_FILE), CONFIG);
        assumeTrue(mkfifo(modelFifo.resolve(PeftAdapterFiles.MODEL_FILE)), "mkfifo failed");
        assertRefused(modelFifo, "adapter_model.safetensors: expected a regular file, got a special file");
    }

    @Test
    void aSymbolicLinkToADeviceIsRefusedWithoutReadingIt() throws IOException {
        Path dev = Path.of("/dev/zero");
        assumeTrue(Files.exists(dev), "no /dev/zero on this system");
        Path cfgLink = tmp.resolve("cfg");
        Files.createDirectories(cfgLink);
        Files.createSymbolicLink(cfgLink.resolve(PeftAdapterFiles.CONFIG_FILE), dev);
        Files.write(cfgLink.resolve(PeftAdapterFiles.MODEL_FILE), validModel());
        assertRefused(cfgLink, "expected a regular file, got a special file", "behind the symbolic link");

        Path modelLink = tmp.resolve("model");
        Files.createDirectories(modelLink);
        Files.writeString(modelLink.resolve(PeftAdapterFiles.CONFIG_FILE), CONFIG);
        Files.createSymbolicLink(modelLink.resolve(PeftAdapterFiles.MODEL_FILE), dev);
        assertRefused(modelLink, "expected a regular file, got a special file");
    }

    @Test
    void aHugeConfigIsRefusedBeforeItIsRead() throws IOException {
        Path dir = tmp.resolve("bigcfg");
        Files.createDirectories(dir);
        Files.write(dir.resolve(PeftAdapterFiles.MODEL_FILE), validModel());
        try (FileChannel ch = FileChannel.open(dir.resolve(PeftAdapterFiles.CONFIG_FILE), StandardOpenOption.CREATE_NEW,
                StandardOpenOption.WRITE, StandardOpenOption.SPARSE)) {
            ch.write(ByteBuffer.wrap(new byte[] {' '}), 1L << 30); // a 1 GiB sparse config
        }
        assertRefused(dir, "adapter_config.json: expected at most " + PeftAdapterConfig.MAX_CONFIG_BYTES + " bytes");
    }

    @Test
    void aFileWithMoreTensorsThanAnyAdapterNeedsIsRefusedBeforeDecoding() throws IOException {
        // MAX_TENSORS + 1 tensors of [1, 1]: a valid file, whose arrays would cost far more than the heap here.
        int n = Safetensors.MAX_TENSORS + 1;
        StringBuilder h = new StringBuilder("{");
        for (int i = 0; i < n; i++) {
            h.append(i == 0 ? "" : ",").append("\"base_model.model.m").append(i / 2).append(i % 2 == 0 ? ".lora_A" : ".lora_B")
                    .append(".weight\":{\"dtype\":\"F32\",\"shape\":[1,1],\"data_offsets\":[").append(4L * i).append(',')
                    .append(4L * i + 4).append("]}");
        }
        h.append('}');
        Path dir = IoTestData.writeDir(tmp.resolve("bomb"), CONFIG.replace("\"r\": 2", "\"r\": 1"),
                IoTestData.file(h.toString(), new byte[4 * n]));
        assertRefused(dir, "more than " + Safetensors.MAX_TENSORS + " tensors", "a LoRA adapter holds two per adapted module");
    }

    @Test
    void aSparseFileDeclaringAHugeTensorThatDoesNotFitTheModelIsRefusedWithoutReadingIt() throws IOException {
        // lora_A [2, 75000000] of F32 is 600 MB; the layer has in = 4. The file is sparse: 600 MB long, ~12 KB on disk.
        long aBytes = 4L * 2 * 75_000_000;
        String header = "{\"base_model.model.m.lora_A.weight\":{\"dtype\":\"F32\",\"shape\":[2,75000000],"
                + "\"data_offsets\":[0," + aBytes + "]},"
                + "\"base_model.model.m.lora_B.weight\":{\"dtype\":\"F32\",\"shape\":[4,2],\"data_offsets\":[" + aBytes
                + "," + (aBytes + 32) + "]}}";
        byte[] h = header.getBytes(StandardCharsets.UTF_8);
        Path dir = tmp.resolve("sparse");
        Files.createDirectories(dir);
        Files.writeString(dir.resolve(PeftAdapterFiles.CONFIG_FILE), CONFIG);
        try (FileChannel ch = FileChannel.open(dir.resolve(PeftAdapterFiles.MODEL_FILE), StandardOpenOption.CREATE_NEW,
                StandardOpenOption.WRITE, StandardOpenOption.SPARSE)) {
            ch.write(ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN).putLong(0, h.length));
            ch.write(ByteBuffer.wrap(h));
            ch.write(ByteBuffer.allocate(32), 8 + h.length + aBytes);
        }
        Map<String, LoraLinear> m = model();
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> PeftAdapterFiles.load(dir, m, "x"));
        assertTrue(e.getMessage().contains("the layer has in = 4, out = 4, so expected A [2, 4] and B [4, 2], got A [2, "
                + "75000000]"), e.getMessage());
        assertTrue(m.get("m").adapterNames().isEmpty());
        // A caller's own check sees the layout before any tensor is decoded, too.
        IllegalStateException stop = assertThrows(IllegalStateException.class, () -> PeftAdapterFiles.read(dir, layout -> {
            throw new IllegalStateException("A is " + java.util.Arrays.toString(layout.loraModules().get("m").shapeA()));
        }));
        assertTrue(stop.getMessage().contains("[2, 75000000]"), stop.getMessage());
    }

    @Test
    void aRankPatternKeyWithCatastrophicBacktrackingIsRefusedInsteadOfHanging() throws IOException {
        // (.*a){20}b against 40 a's takes about C(40, 20) = 1.4e11 steps in a backtracking matcher (Java 17's and
        // Python's alike; Java 17 already took 1.5 s for 24 a's).
        String module = "a".repeat(40);
        String header = "{\"base_model.model." + module + ".lora_A.weight\":{\"dtype\":\"F32\",\"shape\":[2,4],"
                + "\"data_offsets\":[0,32]},\"base_model.model." + module + ".lora_B.weight\":{\"dtype\":\"F32\","
                + "\"shape\":[4,2],\"data_offsets\":[32,64]}}";
        Path dir = IoTestData.writeDir(tmp.resolve("redos"), CONFIG.replace("}", ", \"rank_pattern\": {\"(.*a){20}b\": 3}}"),
                IoTestData.file(header, new byte[64]));
        assertRefused(dir, "pattern key '(.*a){20}b' needs more than", "catastrophic backtracking");
    }
}
