package io.github.lora4j.examples;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.github.lora4j.examples.ParameterSavings.Report;
import io.github.lora4j.examples.ParameterSavings.Row;
import io.github.lora4j.examples.ParameterSavings.Shape;
import java.awt.image.BufferedImage;
import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import javax.imageio.ImageIO;
import javax.xml.parsers.DocumentBuilderFactory;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.w3c.dom.Document;

class ParameterSavingsTest {

    @Test
    void llamaQProjAtRank8TrainsSixtyFiveThousandOfSixteenMillion() {
        Row r = ParameterSavings.row(new Shape("q", 4096, 4096), 8);
        assertEquals(16_777_216L, r.fullParameters());
        assertEquals(65_536L, r.loraParameters());
        assertEquals(0.390625, r.trainablePercent(), 1e-12);
        assertEquals(99.609375, r.savingsPercent(), 1e-12);
    }

    @Test
    void rectangularShapeCountsBothSides() {
        // LLaMA-7B up_proj: W [11008, 4096]; r = 16 trains 16 * (11008 + 4096).
        Row r = ParameterSavings.row(new Shape("up", 11008, 4096), 16);
        assertEquals(45_088_768L, r.fullParameters());
        assertEquals(241_664L, r.loraParameters());
    }

    @Test
    void writesTablesAnswerAndPictures(@TempDir Path dir) throws Exception {
        ByteArrayOutputStream buf = new ByteArrayOutputStream();
        Report report = ParameterSavings.run(new Shape("1024 x 1024", 1024, 1024), 8, dir.resolve("pics"),
                new PrintStream(buf, true, StandardCharsets.UTF_8));
        String printed = buf.toString(StandardCharsets.UTF_8);

        assertEquals(5, report.maxRank99(), "1024 x 1024 at 99 %: 5 * 2048 = 10,240 <= 10,485.76, 6 * 2048 is not");
        assertTrue(printed.contains("r = 5"), printed);

        assertEquals(16, report.chosen().size());
        for (int i = 0; i < 16; i++) {
            Row r = report.chosen().get(i);
            assertEquals(i + 1, r.rank());
            assertEquals(1_048_576L, r.fullParameters());
            assertEquals((i + 1) * 2048L, r.loraParameters());
            assertEquals(100.0, r.trainablePercent() + r.savingsPercent(), 1e-9);
        }
        assertEquals(ParameterSavings.SHAPES.size() * ParameterSavings.TABLE_RANKS.length, report.models().size());
        Row q8 = report.models().stream()
                .filter(r -> r.shape().name().equals("LLaMA-7B q_proj") && r.rank() == 8).findFirst().orElseThrow();
        assertEquals(65_536L, q8.loraParameters());
        assertTrue(printed.contains("65,536") && printed.contains("16,777,216") && printed.contains("0.391%"), printed);

        assertEquals(16_384L, report.diagram().loraParameters());
        List<Path> files = report.files();
        assertEquals(5, files.size());
        assertEquals(dir.resolve("pics/lora-visualizer.html"), files.get(4));
        for (Path f : files) {
            assertTrue(Files.size(f) > 1000, f + " is " + Files.size(f) + " bytes");
        }
        for (Path f : files) {
            if (f.toString().endsWith(".html")) {
                String html = Files.readString(f);
                assertTrue(html.contains("id=\"lora-data\"") && !html.contains("/*LORA_DATA*/"), "data written in");
            } else if (f.toString().endsWith(".svg")) {
                DocumentBuilderFactory factory = DocumentBuilderFactory.newInstance();
                // The SVG names the W3C DTD; parse well-formedness offline instead of fetching it.
                factory.setFeature("http://apache.org/xml/features/nonvalidating/load-external-dtd", false);
                Document doc = factory.newDocumentBuilder().parse(f.toFile());
                assertEquals("svg", doc.getDocumentElement().getNodeName(), f.toString());
            } else {
                BufferedImage img = ImageIO.read(f.toFile());
                assertTrue(img.getWidth() >= 900 && img.getHeight() >= 500, f + ": " + img.getWidth() + "x" + img.getHeight());
            }
        }
        // The diagram is labelled with the computed counts, as text in the SVG.
        String diagram = Files.readString(dir.resolve("pics/lora-layer-diagram.svg"));
        assertTrue(diagram.contains("1,048,576") && diagram.contains("8,192") && diagram.contains("16,384"), diagram);
    }

    @Test
    void refusesRankBeyondShape(@TempDir Path dir) {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> ParameterSavings.run(new Shape("tiny", 4, 6), 5, dir.resolve("never"), System.out));
        assertTrue(e.getMessage().contains("1..4") && e.getMessage().contains("got 5"), e.getMessage());
        assertTrue(Files.notExists(dir.resolve("never")), "nothing written on refusal");
    }
}
