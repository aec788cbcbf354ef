package io.github.lora4j.io;

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;

/**
 * The second process of {@link ConcurrentSaveTest}: reads {@code save <id>} lines from stdin, saves adapter
 * {@code id} ({@link ConcurrentSaveTest#slowSave}) into the directory named by its argument and answers {@code done <id>}
 * (or {@code error <id> <message>}) on stdout; {@code ready} once it can save, and it exits at the end of stdin.
 */
public final class ConcurrentSaveChild {

    private ConcurrentSaveChild() {
    }

    /**
     * Runs the loop.
     *
     * @param args the directory to save into
     * @throws Exception if stdin or stdout fail
     */
    public static void main(String[] args) throws Exception {
        Path dir = Path.of(args[0]);
        PrintStream out = new PrintStream(System.out, true, StandardCharsets.UTF_8);
        ConcurrentSaveTest.saver(-1); // load ND4J before the first round
        out.println("ready");
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        String line;
        while ((line = in.readLine()) != null) {
            int id = Integer.parseInt(line.substring("save ".length()));
            try {
                ConcurrentSaveTest.slowSave(id, dir);
                out.println("done " + id);
            } catch (Exception e) {
                out.println("error " + id + " " + e.toString().replace('\n', ' '));
            }
        }
        System.exit(0);
    }
}
