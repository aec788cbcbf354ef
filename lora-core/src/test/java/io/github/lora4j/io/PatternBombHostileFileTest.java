package io.github.lora4j.io;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.io.Writer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * Issue 29's leftover: an {@code adapter_config.json} under the 8 MiB cap whose {@code rank_pattern} (or
 * {@code alpha_pattern}) holds about 940,000 keys (930,000 here, the file just under the cap) ran a 256 MiB heap out
 * of memory (a JSON tree, then a compiled regex per key). Now refused at {@link PeftAdapterConfig#MAX_PATTERN_ENTRIES} after a streaming count, naming the
 * cap and the count. Runs in the {@code -Xmx256m} execution (the class name holds "HostileFile", see lora-core/pom.xml),
 * with a timeout on a separate thread.
 */
@Timeout(value = 20, threadMode = Timeout.ThreadMode.SEPARATE_THREAD)
class PatternBombHostileFileTest {

    private static final byte[] TENSORS = IoTestData.file("{\"base_model.model.m.lora_A.weight\":{\"dtype\":\"F32\","
            + "\"shape\":[2,4],\"data_offsets\":[0,32]},\"base_model.model.m.lora_B.weight\":{\"dtype\":\"F32\","
            + "\"shape\":[4,2],\"data_offsets\":[32,64]}}", new byte[64]);

    @TempDir
    Path tmp;

    /** A config whose {@code key} object holds {@code n} entries {@code "<i in base 36>": value}, streamed to disk. */
    private Path configWith(String key, int n, String value) throws IOException {
        Path dir = Files.createDirectories(tmp.resolve(key + n));
        try (Writer w = Files.newBufferedWriter(dir.resolve(PeftAdapterFiles.CONFIG_FILE), StandardCharsets.UTF_8)) {
            w.write("{\"peft_type\": \"LORA\", \"r\": 2, \"lora_alpha\": 4, \"target_modules\": [\"m\"], \"" + key + "\": {");
            for (int i = 0; i < n; i++) {
                w.write((i == 0 ? "" : ",") + "\"" + Integer.toString(i, 36) + "\":" + value);
            }
            w.write("}}");
        }
        Files.write(dir.resolve(PeftAdapterFiles.MODEL_FILE), TENSORS);
        return dir;
    }

    @ParameterizedTest(name = "{0}")
    @ValueSource(strings = {"rank_pattern", "alpha_pattern"})
    void nineHundredThirtyThousandKeysAreRefusedNamingTheCapAndTheCount(String key) throws IOException {
        Path dir = configWith(key, 930_000, "1");
        assertTrue(Files.size(dir.resolve(PeftAdapterFiles.CONFIG_FILE)) < PeftAdapterConfig.MAX_CONFIG_BYTES,
                "under the 8 MiB file cap: the pattern cap is what refuses it");
        AdapterFormatException e = assertThrows(AdapterFormatException.class, () -> PeftAdapterFiles.read(dir));
        assertEquals(PeftAdapterFiles.CONFIG_FILE + ": " + key + " holds 930000 entries; expected at most "
                + PeftAdapterConfig.MAX_PATTERN_ENTRIES + " (one per module whose rank or alpha differs)", e.getMessage());
    }

    @Test
    void oneAboveTheCapIsRefusedAndTheCapItselfIsRead() throws IOException {
        int cap = PeftAdapterConfig.MAX_PATTERN_ENTRIES;
        AdapterFormatException e = assertThrows(AdapterFormatException.class,
                () -> PeftAdapterFiles.read(configWith("rank_pattern", cap + 1, "3")));
        assertTrue(e.getMessage().contains("holds " + (cap + 1) + " entries; expected at most " + cap), e.getMessage());
        // r = 2 everywhere, so the file's tensors (of module "m", which key "m" names) fit whatever key matches
        PeftAdapterConfig c = PeftAdapterFiles.read(configWith("rank_pattern", cap, "2")).config();
        assertEquals(cap, c.rankPattern().size());
        assertEquals(2, c.rankOf("a.0"));
    }
}
