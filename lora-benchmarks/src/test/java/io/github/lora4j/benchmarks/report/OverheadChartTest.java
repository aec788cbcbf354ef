package io.github.lora4j.benchmarks.report;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.knowm.xchart.XYChart;

class OverheadChartTest {

    @TempDir
    Path dir;

    @Test
    void chartHasOneSeriesPerRankAndSizePlusTheTarget() throws IOException {
        XYChart chart = OverheadChart.build(Fixture.load(dir));
        assertEquals(List.of("r = 8, in = out = 1024", "r = 8, in = out = 4096", "r = 64, in = out = 4096",
                "target 1.05 (4096, r = 8)"),
                chart.getSeriesCollection().stream().map(org.knowm.xchart.XYSeries::getName).toList());
        assertEquals(org.knowm.xchart.style.Styler.LegendPosition.OutsideE, chart.getStyler().getLegendPosition(),
                "the legend sits beside the plot, off the data");
        double[] ys = chart.getSeries("r = 8, in = out = 4096").getYData();
        assertEquals(4100.0 / 4050.0, ys[0], 1e-12);
        assertEquals(13000.0 / 12800.0, ys[1], 1e-12);
    }

    @Test
    void svgAndPngAreWrittenAndNonEmpty() throws IOException {
        List<Path> files = OverheadChart.write(Fixture.load(dir), dir, "overhead");
        assertEquals(List.of(dir.resolve("overhead.svg"), dir.resolve("overhead.png")), files);
        String svg = Files.readString(files.get(0), StandardCharsets.UTF_8);
        assertTrue(svg.contains("<svg"), "SVG file should hold an <svg> element");
        byte[] png = Files.readAllBytes(files.get(1));
        assertTrue(png.length > 1000, "PNG has " + png.length + " bytes");
        assertArrayEquals(new byte[] {(byte) 0x89, 'P', 'N', 'G'}, Arrays.copyOf(png, 4));
    }

    @Test
    void nothingIsWrittenWithoutForwardData() throws IOException {
        ReportData mergeOnly = ReportData.of(Map.of(), List.of(), Fixture.only(dir, "MergeBenchmark"));
        assertNull(OverheadChart.build(mergeOnly));
        assertEquals(List.of(), OverheadChart.write(mergeOnly, dir, "empty"));
        assertTrue(Files.notExists(dir.resolve("empty.svg")));
    }
}
