package io.github.lora4j.benchmarks.report;

import de.erichseifert.vectorgraphics2d.Document;
import de.erichseifert.vectorgraphics2d.Processors;
import de.erichseifert.vectorgraphics2d.VectorGraphics2D;
import de.erichseifert.vectorgraphics2d.util.PageSize;
import java.io.IOException;
import java.io.OutputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import javax.imageio.ImageIO;
import org.knowm.xchart.BitmapEncoder;
import org.knowm.xchart.XYChart;
import org.knowm.xchart.XYChartBuilder;
import org.knowm.xchart.XYSeries;
import org.knowm.xchart.style.Styler;
import org.knowm.xchart.style.lines.SeriesLines;
import org.knowm.xchart.style.markers.SeriesMarkers;

/**
 * XChart line chart of the unmerged/merged forward time ratio against batch size (log scale), one series per
 * rank × shape, with the 1.05 target as a dashed line, the legend right of the plot. Written as SVG and PNG.
 */
public final class OverheadChart {

    private OverheadChart() {
    }

    /** The chart, or null when the data hold no pair of merged and unmerged forward times. */
    public static XYChart build(ReportData data) {
        XYChart chart = new XYChartBuilder().width(1000).height(500)
                .title("LoRA unmerged / merged forward time vs batch size")
                .xAxisTitle("batch size n (rows)").yAxisTitle("unmerged / merged (median)").build();
        chart.getStyler().setXAxisLogarithmic(true);
        // Outside the plot, right of it, one entry per line: inside, the legend covered a data point, and in a row
        // below the plot five entries did not fit the width.
        chart.getStyler().setLegendPosition(Styler.LegendPosition.OutsideE);
        chart.getStyler().setLegendLayout(Styler.LegendLayout.Vertical);
        String f = MarkdownReport.FORWARD;
        double minN = Double.MAX_VALUE;
        double maxN = 0;
        int series = 0;
        for (int rank : data.values(f + ".unmerged", "rank")) {
            for (int[] shape : data.shapes(f + ".unmerged")) {
                List<Double> xs = new ArrayList<>();
                List<Double> ys = new ArrayList<>();
                String in = String.valueOf(shape[0]);
                String out = String.valueOf(shape[1]);
                for (int n : data.values(f + ".unmerged", "batch")) {
                    String b = String.valueOf(n);
                    double ratio = data.median(f + ".unmerged", "in", in, "out", out, "rank", String.valueOf(rank),
                            "batch", b) / data.median(f + ".merged", "in", in, "out", out, "batch", b);
                    if (!Double.isNaN(ratio)) {
                        xs.add((double) n);
                        ys.add(ratio);
                        minN = Math.min(minN, n);
                        maxN = Math.max(maxN, n);
                    }
                }
                if (!xs.isEmpty()) {
                    String label = shape[0] == shape[1] ? "in = out = " + in : "in = " + in + ", out = " + out;
                    chart.addSeries("r = " + rank + ", " + label, xs, ys).setMarker(SeriesMarkers.CIRCLE);
                    series++;
                }
            }
        }
        if (series == 0) {
            return null;
        }
        XYSeries target = chart.addSeries("target 1.05 (4096, r = 8)", new double[] {minN, maxN},
                new double[] {Targets.UNMERGED_OVER_MERGED_4096, Targets.UNMERGED_OVER_MERGED_4096});
        target.setMarker(SeriesMarkers.NONE);
        target.setLineStyle(SeriesLines.DASH_DASH);
        return chart;
    }

    /**
     * Writes {@code <base>.svg} and {@code <base>.png} in {@code dir}.
     *
     * @return the files written; empty when there was nothing to chart
     */
    public static List<Path> write(ReportData data, Path dir, String base) throws IOException {
        XYChart chart = build(data);
        if (chart == null) {
            return List.of();
        }
        Path svg = dir.resolve(base + ".svg");
        Path png = dir.resolve(base + ".png");
        // Drawn directly (XChart 4.0.3 deprecates its save methods): SVG through VectorGraphics2D, PNG through ImageIO.
        VectorGraphics2D g = new VectorGraphics2D();
        chart.paint(g, chart.getWidth(), chart.getHeight());
        Document doc = Processors.get("svg").getDocument(g.getCommands(),
                new PageSize(0, 0, chart.getWidth(), chart.getHeight()));
        try (OutputStream os = Files.newOutputStream(svg)) {
            doc.writeTo(os);
        }
        ImageIO.write(BitmapEncoder.getBufferedImage(chart), "png", png.toFile());
        return List.of(svg, png);
    }
}
