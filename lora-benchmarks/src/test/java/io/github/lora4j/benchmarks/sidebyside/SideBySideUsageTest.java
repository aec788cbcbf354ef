package io.github.lora4j.benchmarks.sidebyside;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** {@code --help} must print usage and start nothing: an earlier version ignored it and ran the 10-minute grid. */
class SideBySideUsageTest {

    @Test
    void helpPrintsUsageAndRunsNothing(@TempDir Path dir) throws Exception {
        Path out = dir.resolve("never-created");
        PrintStream original = System.out;
        ByteArrayOutputStream captured = new ByteArrayOutputStream();
        System.setOut(new PrintStream(captured, true, StandardCharsets.UTF_8));
        try {
            SideBySide.main(new String[] {"--out", out.toString(), "--help"});
        } finally {
            System.setOut(original);
        }
        String printed = captured.toString(StandardCharsets.UTF_8);
        assertEquals(SideBySide.USAGE + System.lineSeparator(), printed);
        assertTrue(printed.contains("--grid full|small"), printed);
        assertFalse(Files.exists(out), "--help must not create the output folder or measure anything");
    }
}
