package io.github.lora4j.examples;

import de.erichseifert.vectorgraphics2d.Document;
import de.erichseifert.vectorgraphics2d.Processors;
import de.erichseifert.vectorgraphics2d.VectorGraphics2D;
import de.erichseifert.vectorgraphics2d.util.PageSize;
import io.github.lora4j.LoraMath;
import java.awt.BasicStroke;
import java.awt.Color;
import java.awt.Font;
import java.awt.FontMetrics;
import java.awt.Graphics2D;
import java.awt.RenderingHints;
import java.awt.geom.Ellipse2D;
import java.awt.geom.Line2D;
import java.awt.geom.Path2D;
import java.awt.geom.RoundRectangle2D;
import java.awt.image.BufferedImage;
import java.io.IOException;
import java.io.OutputStream;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import javax.imageio.ImageIO;
import org.knowm.xchart.ChartEncoder;
import org.knowm.xchart.XYChart;
import org.knowm.xchart.XYChartBuilder;
import org.knowm.xchart.XYSeries;
import org.knowm.xchart.style.Styler;
import org.knowm.xchart.style.XYStyler;
import org.knowm.xchart.style.lines.SeriesLines;
import org.knowm.xchart.style.markers.SeriesMarkers;

/**
 * Example 1, the classroom view of LoRA: how many parameters a rank-{@code r} adapter trains instead of full
 * fine-tuning of a {@code d × k} weight ({@code d = out}, {@code k = in}).
 *
 * <p>Prints the table for one chosen shape at every rank 1–16, then for square sizes up to 4096 and real model
 * shapes (GPT-2, LLaMA-7B) at ranks 1, 2, 4, 8, 16; answers "the largest rank that keeps 99 % savings for
 * 1024 × 1024"; and writes two pictures, each as SVG and PNG: a chart of parameters against rank (log scale) and a
 * diagram of the layer labelled with the computed counts.
 *
 * <pre>
 * mvn -B -q -Pexample -DskipTests -pl lora-examples -am package
 * mvn -B -q -Pexample -DskipTests -pl lora-examples -am package -Dexec.args="--d 4096 --k 11008 --r 8 --out /tmp/pics"
 * </pre>
 */
public final class ParameterSavings {

    /** Ranks of the model-shape table. */
    static final int[] TABLE_RANKS = {1, 2, 4, 8, 16};

    /** Square sizes up to 4096 and real projection shapes, {@code d × k = out × in}. */
    static final List<Shape> SHAPES = List.of(
            new Shape("256 x 256", 256, 256),
            new Shape("512 x 512", 512, 512),
            new Shape("1024 x 1024", 1024, 1024),
            new Shape("2048 x 2048", 2048, 2048),
            new Shape("4096 x 4096", 4096, 4096),
            new Shape("GPT-2 attn.c_proj", 768, 768),
            new Shape("GPT-2 mlp.c_fc", 3072, 768),
            new Shape("LLaMA-7B q_proj", 4096, 4096),
            new Shape("LLaMA-7B up_proj", 11008, 4096),
            new Shape("LLaMA-7B down_proj", 4096, 11008));

    /** Shapes drawn in the chart: one LoRA line and one full-fine-tuning line each. */
    static final List<Shape> CHART_SHAPES = List.of(
            new Shape("768 x 768 (GPT-2)", 768, 768),
            new Shape("1024 x 1024", 1024, 1024),
            new Shape("4096 x 4096 (q_proj)", 4096, 4096),
            new Shape("11008 x 4096 (up_proj)", 11008, 4096));

    private ParameterSavings() {
    }

    /**
     * A named weight shape.
     *
     * @param name label for tables and charts
     * @param d    output features (rows of {@code W [d, k]})
     * @param k    input features
     */
    public record Shape(String name, long d, long k) {
    }

    /**
     * One line of the table.
     *
     * @param shape            the weight shape
     * @param rank             adapter rank {@code r}
     * @param fullParameters   {@code d·k}, trained by full fine-tuning
     * @param loraParameters   {@code r·(d + k)}, trained by LoRA
     * @param trainablePercent {@code 100·r·(d + k)/(d·k)}
     * @param savingsPercent   {@code 100 − trainablePercent}
     */
    public record Row(Shape shape, int rank, long fullParameters, long loraParameters, double trainablePercent,
                      double savingsPercent) {
    }

    /**
     * Everything the example computes and writes.
     *
     * @param chosen        the chosen shape at ranks 1–16
     * @param models        {@link #SHAPES} at {@link #TABLE_RANKS}
     * @param maxRank99     largest rank keeping at least 99 % savings for 1024 × 1024
     * @param diagram       the row the diagram is labelled with (chosen shape, chosen rank)
     * @param files         files written: chart and diagram, each SVG and PNG, then the visualizer page
     */
    public record Report(List<Row> chosen, List<Row> models, int maxRank99, Row diagram, List<Path> files) {
    }

    /** The table line for {@code shape} at rank {@code r}, from {@link LoraMath}. */
    public static Row row(Shape shape, int r) {
        long full = LoraMath.fullParameters(shape.d(), shape.k());
        long lora = LoraMath.loraParameters(shape.d(), shape.k(), r);
        double trainable = 100.0 * LoraMath.overheadRatio(shape.d(), shape.k(), r);
        return new Row(shape, r, full, lora, trainable, 100.0 * LoraMath.savings(shape.d(), shape.k(), r));
    }

    /** The table lines for every shape at every rank, shape-major. */
    public static List<Row> table(List<Shape> shapes, int[] ranks) {
        List<Row> rows = new ArrayList<>();
        for (Shape s : shapes) {
            for (int r : ranks) {
                rows.add(row(s, r));
            }
        }
        return rows;
    }

    /**
     * Computes the tables, prints them to {@code out}, and writes the pictures into {@code outDir}
     * (created if missing): {@code lora-params-vs-rank.svg/.png}, {@code lora-layer-diagram.svg/.png} and the
     * interactive {@code lora-visualizer.html} (see {@link Visualizer}).
     *
     * @param chosen the shape tabulated at ranks 1–16 and drawn in the diagram
     * @param rank   the rank the diagram shows, in {@code [1, min(d, k)]}
     */
    public static Report run(Shape chosen, int rank, Path outDir, PrintStream out) throws IOException {
        if (rank < 1 || rank > Math.min(chosen.d(), chosen.k())) {
            throw new IllegalArgumentException("rank: expected 1.." + Math.min(chosen.d(), chosen.k()) + " for "
                    + chosen.d() + " x " + chosen.k() + ", got " + rank);
        }
        int[] oneToSixteen = new int[16];
        for (int i = 0; i < 16; i++) {
            oneToSixteen[i] = i + 1;
        }
        List<Row> chosenRows = table(List.of(chosen), oneToSixteen);
        List<Row> modelRows = table(SHAPES, TABLE_RANKS);
        int maxRank99 = LoraMath.maxRankForSavings(1024, 1024, 0.99);

        out.printf(Locale.ROOT, "Full fine-tuning vs LoRA for W [d x k] = %d x %d (d = out, k = in)%n", chosen.d(), chosen.k());
        printTable(out, chosenRows);
        out.println();
        out.println("Sizes up to 4096 and real model shapes:");
        printTable(out, modelRows);
        out.println();
        Row at99 = row(new Shape("1024 x 1024", 1024, 1024), maxRank99);
        out.printf(Locale.ROOT, "Largest rank keeping >= 99 %% savings for 1024 x 1024: r = %d (%,d of %,d parameters,"
                + " savings %.2f %%; r = %d would save %.2f %%)%n", maxRank99, at99.loraParameters(),
                at99.fullParameters(), at99.savingsPercent(), maxRank99 + 1,
                100 * LoraMath.savings(1024, 1024, maxRank99 + 1));

        Files.createDirectories(outDir);
        List<Path> files = new ArrayList<>();
        XYChart chart = paramsVsRankChart(CHART_SHAPES);
        Path chartSvg = outDir.resolve("lora-params-vs-rank.svg");
        try (OutputStream os = Files.newOutputStream(chartSvg)) {
            ChartEncoder.saveChart(chart, os, "svg");
        }
        Path chartPng = outDir.resolve("lora-params-vs-rank.png");
        try (OutputStream os = Files.newOutputStream(chartPng)) {
            ChartEncoder.saveChart(chart, os, "png");
        }
        Row diagramRow = row(chosen, rank);
        Path diagramSvg = outDir.resolve("lora-layer-diagram.svg");
        Path diagramPng = outDir.resolve("lora-layer-diagram.png");
        writeDiagram(diagramRow, diagramSvg, diagramPng);
        files.add(chartSvg);
        files.add(chartPng);
        files.add(diagramSvg);
        files.add(diagramPng);
        List<Visualizer.Overhead> measured = Visualizer.readOverheads(Visualizer.resultsDirectory());
        files.add(Visualizer.write(outDir.resolve(Visualizer.FILE), SHAPES, chosen, Math.min(rank, 16), measured));
        out.println();
        for (Path f : files) {
            out.printf(Locale.ROOT, "wrote %s (%,d bytes)%n", f, Files.size(f));
        }
        out.printf(Locale.ROOT, "Open the interactive visualizer in a browser: %s%s%n",
                files.get(files.size() - 1).toAbsolutePath().toUri(),
                measured.isEmpty() ? "" : " (with " + measured.size() + " measured overheads from lora-benchmarks/results)");
        return new Report(chosenRows, modelRows, maxRank99, diagramRow, List.copyOf(files));
    }

    private static void printTable(PrintStream out, List<Row> rows) {
        out.printf(Locale.ROOT, "%-20s %13s %4s %14s %12s %11s %9s%n", "shape", "d x k", "r", "full", "LoRA",
                "trainable", "savings");
        Shape last = null;
        for (Row r : rows) {
            boolean first = !r.shape().equals(last);
            last = r.shape();
            out.printf(Locale.ROOT, "%-20s %13s %4d %,14d %,12d %10.3f%% %8.2f%%%n", first ? r.shape().name() : "",
                    first ? r.shape().d() + " x " + r.shape().k() : "", r.rank(), r.fullParameters(),
                    r.loraParameters(), r.trainablePercent(), r.savingsPercent());
        }
    }

    // ---------------------------------------------------------------- chart

    /** Parameters against rank 1–16 on a log axis: a solid LoRA line and a dashed full-fine-tuning line per shape. */
    static XYChart paramsVsRankChart(List<Shape> shapes) {
        XYChart chart = new XYChartBuilder().width(1100).height(600)
                .title("Trainable parameters per weight matrix: LoRA (solid) vs full fine-tuning (dashed)")
                .xAxisTitle("LoRA rank r").yAxisTitle("trainable parameters (log scale)").build();
        XYStyler styler = chart.getStyler();
        chart.getStyler().setYAxisLogarithmic(true);
        // One column to the right: eight entries in a row below the plot do not fit.
        chart.getStyler().setLegendPosition(Styler.LegendPosition.OutsideE);
        chart.getStyler().setLegendLayout(Styler.LegendLayout.Vertical);
        chart.getStyler().setXAxisDecimalPattern("0");
        chart.getStyler().setChartBackgroundColor(Color.WHITE);
        chart.getStyler().setPlotGridLinesColor(new Color(0xDD, 0xDD, 0xDD));
        chart.getStyler().setYAxisMin(1_000.0);
        chart.getStyler().setYAxisMax(1.0e8);
        styler.setChartTitleFont(new Font(Font.SANS_SERIF, Font.BOLD, 16));
        styler.setLegendFont(new Font(Font.SANS_SERIF, Font.PLAIN, 13));
        styler.setAxisTitleFont(new Font(Font.SANS_SERIF, Font.PLAIN, 14));
        styler.setAxisTickLabelsFont(new Font(Font.SANS_SERIF, Font.PLAIN, 12));
        Color[] colors = {new Color(0x1f77b4), new Color(0xff7f0e), new Color(0x2ca02c), new Color(0xd62728)};
        double[] ranks = new double[16];
        for (int i = 0; i < 16; i++) {
            ranks[i] = i + 1;
        }
        for (int s = 0; s < shapes.size(); s++) {
            Shape shape = shapes.get(s);
            double[] lora = new double[ranks.length];
            double[] full = new double[ranks.length];
            for (int i = 0; i < ranks.length; i++) {
                lora[i] = LoraMath.loraParameters(shape.d(), shape.k(), (int) ranks[i]);
                full[i] = LoraMath.fullParameters(shape.d(), shape.k());
            }
            Color c = colors[s % colors.length];
            XYSeries l = chart.addSeries("LoRA " + shape.name(), ranks, lora);
            l.setLineColor(c);
            l.setMarkerColor(c);
            l.setMarker(SeriesMarkers.CIRCLE);
            XYSeries f = chart.addSeries("full " + shape.name(), ranks, full);
            f.setLineColor(c);
            f.setLineStyle(SeriesLines.DASH_DASH);
            f.setMarker(SeriesMarkers.NONE);
        }
        return chart;
    }

    // ---------------------------------------------------------------- diagram

    private static final int DIAGRAM_WIDTH = 1000;
    private static final int DIAGRAM_HEIGHT = 520;
    private static final Color FROZEN = new Color(0xC9, 0xD6, 0xE8);
    private static final Color TRAINED = new Color(0xFF, 0xC8, 0x8A);
    private static final Color INK = new Color(0x22, 0x22, 0x22);

    /** Draws the layer once into an SVG (through VectorGraphics2D) and once into a PNG (through Java2D). */
    static void writeDiagram(Row row, Path svg, Path png) throws IOException {
        VectorGraphics2D vg = new VectorGraphics2D();
        drawDiagram(vg, row);
        Document doc = Processors.get("svg").getDocument(vg.getCommands(),
                new PageSize(0, 0, DIAGRAM_WIDTH, DIAGRAM_HEIGHT));
        try (OutputStream os = Files.newOutputStream(svg)) {
            doc.writeTo(os);
        }
        // Twice the resolution so the PNG stays crisp when scaled down in a README.
        BufferedImage image = new BufferedImage(2 * DIAGRAM_WIDTH, 2 * DIAGRAM_HEIGHT, BufferedImage.TYPE_INT_RGB);
        Graphics2D g = image.createGraphics();
        try {
            g.setRenderingHint(RenderingHints.KEY_ANTIALIASING, RenderingHints.VALUE_ANTIALIAS_ON);
            g.setRenderingHint(RenderingHints.KEY_TEXT_ANTIALIASING, RenderingHints.VALUE_TEXT_ANTIALIAS_ON);
            g.scale(2, 2);
            drawDiagram(g, row);
        } finally {
            g.dispose();
        }
        ImageIO.write(image, "png", png.toFile());
    }

    /**
     * The LoRA layer, left to right: {@code x [k]} feeds the frozen {@code W [d × k]} and the trainable path
     * {@code A [r × k] → r → B [d × r]}; both meet in a sum giving {@code h = (W + BA)x [d]}. Every box carries
     * its computed parameter count.
     */
    static void drawDiagram(Graphics2D g, Row row) {
        long d = row.shape().d();
        long k = row.shape().k();
        int r = row.rank();
        g.setColor(Color.WHITE);
        g.fillRect(0, 0, DIAGRAM_WIDTH, DIAGRAM_HEIGHT);
        g.setStroke(new BasicStroke(1.6f));
        Font title = new Font(Font.SANS_SERIF, Font.BOLD, 20);
        Font big = new Font(Font.SANS_SERIF, Font.BOLD, 22);
        Font label = new Font(Font.SANS_SERIF, Font.PLAIN, 14);
        Font small = new Font(Font.SANS_SERIF, Font.PLAIN, 13);

        // Single spaces only in drawn text: SVG collapses runs of spaces, which would shift centred lines.
        g.setColor(INK);
        centered(g, title, String.format(Locale.ROOT, "LoRA on one weight: h = (W + BA) x with d = %,d, k = %,d, r = %d",
                d, k, r), DIAGRAM_WIDTH / 2.0, 38);

        // x
        double xCx = 80;
        double midY = 245;
        box(g, xCx - 45, midY - 35, 90, 70, Color.WHITE);
        centered(g, big, "x", xCx, midY + 8);
        centered(g, small, String.format(Locale.ROOT, "[k = %,d]", k), xCx, midY + 58);

        // frozen W
        double wX = 230;
        double wY = 80;
        double wW = 330;
        double wH = 120;
        box(g, wX, wY, wW, wH, FROZEN);
        centered(g, big, "W (frozen)", wX + wW / 2, wY + 36);
        centered(g, label, String.format(Locale.ROOT, "d x k = %,d x %,d", d, k), wX + wW / 2, wY + 66);
        centered(g, label, String.format(Locale.ROOT, "%,d parameters, not trained", row.fullParameters()),
                wX + wW / 2, wY + 92);

        // trainable path: A (k -> r), the rank-r bottleneck, B (r -> d)
        double pathTop = 270;
        double pathBottom = 410;
        double pathMid = (pathTop + pathBottom) / 2;
        double neck = 26;
        double aX0 = 230;
        double aX1 = 360;
        trapezoid(g, aX0, pathTop, pathBottom, aX1, pathMid - neck, pathMid + neck, TRAINED);
        centered(g, big, "A", (aX0 + aX1) / 2, pathMid + 8);
        double rCx = 395;
        box(g, rCx - 30, pathMid - 22, 60, 44, Color.WHITE);
        centered(g, label, "r = " + r, rCx, pathMid + 5);
        double bX0 = 430;
        double bX1 = 560;
        trapezoid(g, bX0, pathMid - neck, pathMid + neck, bX1, pathTop, pathBottom, TRAINED);
        centered(g, big, "B", (bX0 + bX1) / 2, pathMid + 8);
        long aParams = (long) r * k;
        long bParams = d * (long) r;
        centered(g, small, String.format(Locale.ROOT, "A: r x k = %d x %,d", r, k), (aX0 + aX1) / 2, pathBottom + 24);
        centered(g, small, String.format(Locale.ROOT, "%,d trained", aParams), (aX0 + aX1) / 2, pathBottom + 42);
        centered(g, small, String.format(Locale.ROOT, "B: d x r = %,d x %d", d, r), (bX0 + bX1) / 2, pathBottom + 24);
        centered(g, small, String.format(Locale.ROOT, "%,d trained", bParams), (bX0 + bX1) / 2, pathBottom + 42);

        // sum and output
        double plusCx = 660;
        double plusR = 24;
        g.setColor(Color.WHITE);
        g.fill(new Ellipse2D.Double(plusCx - plusR, midY - plusR, 2 * plusR, 2 * plusR));
        g.setColor(INK);
        g.draw(new Ellipse2D.Double(plusCx - plusR, midY - plusR, 2 * plusR, 2 * plusR));
        centered(g, big, "+", plusCx, midY + 8);
        double hX = 770;
        box(g, hX, midY - 35, 190, 70, Color.WHITE);
        centered(g, big, "h = Wx + BAx", hX + 95, midY + 2);
        centered(g, small, String.format(Locale.ROOT, "[d = %,d]", d), hX + 95, midY + 24);

        // arrows
        arrow(g, xCx + 45, midY - 10, wX, wY + wH / 2);
        arrow(g, xCx + 45, midY + 10, aX0, pathMid);
        arrow(g, wX + wW, wY + wH / 2, plusCx - plusR * 0.75, midY - plusR * 0.7);
        arrow(g, bX1, pathMid, plusCx - plusR * 0.75, midY + plusR * 0.7);
        arrow(g, plusCx + plusR, midY, hX, midY);

        // legend and totals
        double legendY = 110;
        swatch(g, 790, legendY, FROZEN, "frozen", label);
        swatch(g, 790, legendY + 28, TRAINED, "trained (LoRA)", label);
        g.setColor(INK);
        Font total = new Font(Font.SANS_SERIF, Font.BOLD, 15);
        centered(g, total, String.format(Locale.ROOT,
                "Full fine-tuning trains %,d parameters; LoRA trains r(d + k) = %,d (%.2f %%), a saving of %.2f %%.",
                row.fullParameters(), row.loraParameters(), row.trainablePercent(), row.savingsPercent()),
                DIAGRAM_WIDTH / 2.0, DIAGRAM_HEIGHT - 22);
    }

    private static void box(Graphics2D g, double x, double y, double w, double h, Color fill) {
        RoundRectangle2D.Double rect = new RoundRectangle2D.Double(x, y, w, h, 12, 12);
        g.setColor(fill);
        g.fill(rect);
        g.setColor(INK);
        g.draw(rect);
    }

    /** A trapezoid from a vertical edge at {@code x0} ({@code y0a..y0b}) to one at {@code x1} ({@code y1a..y1b}). */
    private static void trapezoid(Graphics2D g, double x0, double y0a, double y0b, double x1, double y1a, double y1b,
                                  Color fill) {
        Path2D.Double p = new Path2D.Double();
        p.moveTo(x0, y0a);
        p.lineTo(x1, y1a);
        p.lineTo(x1, y1b);
        p.lineTo(x0, y0b);
        p.closePath();
        g.setColor(fill);
        g.fill(p);
        g.setColor(INK);
        g.draw(p);
    }

    private static void arrow(Graphics2D g, double x0, double y0, double x1, double y1) {
        g.setColor(INK);
        g.draw(new Line2D.Double(x0, y0, x1, y1));
        double angle = Math.atan2(y1 - y0, x1 - x0);
        double len = 11;
        double spread = Math.toRadians(24);
        Path2D.Double head = new Path2D.Double();
        head.moveTo(x1, y1);
        head.lineTo(x1 - len * Math.cos(angle - spread), y1 - len * Math.sin(angle - spread));
        head.lineTo(x1 - len * Math.cos(angle + spread), y1 - len * Math.sin(angle + spread));
        head.closePath();
        g.fill(head);
    }

    private static void swatch(Graphics2D g, double x, double y, Color fill, String text, Font font) {
        box(g, x, y - 14, 26, 18, fill);
        g.setColor(INK);
        g.setFont(font);
        g.drawString(text, (float) (x + 36), (float) y);
    }

    private static void centered(Graphics2D g, Font font, String text, double cx, double baseline) {
        g.setFont(font);
        FontMetrics fm = g.getFontMetrics(font);
        g.setColor(INK);
        g.drawString(text, (float) (cx - fm.stringWidth(text) / 2.0), (float) baseline);
    }

    // ---------------------------------------------------------------- command line

    /**
     * Entry point. Options: {@code --d <out>} and {@code --k <in>} (default 1024 each) choose the shape tabulated at
     * ranks 1–16 and drawn; {@code --r <rank>} the rank drawn (default 8); {@code --out <dir>} where pictures go
     * (default: {@link ExampleOutput#directory()}, {@code lora-examples/target/examples/}).
     */
    public static void main(String[] args) throws IOException {
        long d = 1024;
        long k = 1024;
        int r = 8;
        Path outDir = ExampleOutput.directory();
        for (int i = 0; i < args.length; i++) {
            String a = args[i];
            if (i + 1 >= args.length) {
                throw new IllegalArgumentException("option " + a + " needs a value; options: --d --k --r --out");
            }
            String v = args[++i];
            switch (a) {
                case "--d" -> d = Long.parseLong(v);
                case "--k" -> k = Long.parseLong(v);
                case "--r" -> r = Integer.parseInt(v);
                case "--out" -> outDir = Path.of(v);
                default -> throw new IllegalArgumentException("unknown option " + a + "; expected --d, --k, --r or --out");
            }
        }
        run(new Shape(d + " x " + k, d, k), r, outDir, System.out);
    }
}
