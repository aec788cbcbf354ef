package io.github.lora4j.examples;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class ExampleOutputTest {

    @TempDir
    Path root;

    @Test
    void thePropertyWinsAndIsResolvedAgainstTheWorkingDirectory() {
        assertEquals(root.resolve("pics"), ExampleOutput.resolve("pics", root.resolve("x/target/classes"), root));
        assertEquals(Path.of("/tmp/abs"), ExampleOutput.resolve("/tmp/abs", null, root));
    }

    @Test
    void classesInTargetGiveTargetExamplesWhereverTheWorkingDirectoryIs() {
        Path classes = root.resolve("lora-examples/target/classes");
        Path expected = root.resolve("lora-examples/target/examples");
        assertEquals(expected, ExampleOutput.resolve(null, classes, root));
        assertEquals(expected, ExampleOutput.resolve(null, classes, root.resolve("lora-examples")));
        assertEquals(expected, ExampleOutput.resolve("", root.resolve("lora-examples/target/lora-examples.jar"),
                Path.of("/")));
    }

    @Test
    void elsewhereTheModuleFolderUnderTheProjectRootIsUsed() throws IOException {
        Path jar = root.resolve("lib/lora-examples.jar");   // not in a target folder
        assertEquals(root.resolve("target/examples"), ExampleOutput.resolve(null, jar, root));
        Files.createDirectories(root.resolve("lora-examples"));
        assertEquals(root.resolve("lora-examples/target/examples"), ExampleOutput.resolve(null, jar, root));
        assertEquals(root.resolve("lora-examples/target/examples"), ExampleOutput.resolve(null, null, root));
    }

    @Test
    void inThisBuildItIsTheModulesTargetExamples() {
        // Surefire runs with this module's target/classes on the class path and no property set.
        Path dir = ExampleOutput.directory();
        assertEquals("examples", dir.getFileName().toString());
        assertEquals("target", dir.getParent().getFileName().toString());
        assertEquals("lora-examples", dir.getParent().getParent().getFileName().toString());
        assertEquals(dir.resolve("a.png"), ExampleOutput.file("a.png"));
    }
}
